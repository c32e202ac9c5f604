"""The GPU report's time arithmetic (``specvlm.tools.gpu_report.budget``): the caps fit the
budget with a margin, every step has one, and a step's cap is clipped to the time left."""

from __future__ import annotations

import pytest

from specvlm.tools.gpu_report import budget as b
from specvlm.tools.gpu_report.runner import soft_deadline
from specvlm.tools.gpu_report.steps import SPECS


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_gpu_budget_is_eight_minutes_and_its_caps_leave_a_margin():
    assert b.GPU.total == 480.0
    for budget in b.BUDGETS.values():
        assert sum(budget.caps.values()) + budget.reserve < budget.total
        assert budget.margin >= 20.0  # start-up, the pages between steps


def test_every_step_has_a_cap_in_every_mode():
    assert tuple(s.name for s in SPECS) == b.STEPS
    for budget in b.BUDGETS.values():
        assert set(budget.caps) == set(b.STEPS)
        assert all(cap >= 10.0 for cap in budget.caps.values())


def test_cap_is_the_steps_own_while_time_is_plenty():
    clock = Clock()
    deadline = b.Deadline(b.GPU, t0=clock.now, clock=clock)
    assert deadline.cap("benches") == b.GPU.caps["benches"]
    assert deadline.left() == b.GPU.total - b.GPU.reserve


def test_cap_is_clipped_to_the_time_left_and_never_negative():
    clock = Clock()
    deadline = b.Deadline(b.GPU, t0=clock.now, clock=clock)
    clock.now += b.GPU.total - b.GPU.reserve - 7.5  # 7.5 s left before the reserve
    assert deadline.cap("benches") == pytest.approx(7.5)
    assert deadline.cap("env") == pytest.approx(7.5)
    clock.now += 60.0  # past the deadline
    assert deadline.cap("benches") == 0.0
    assert deadline.cap("benches") < b.MIN_STEP


def test_caps_taken_in_turn_end_by_the_deadline_whatever_each_step_takes():
    """Each step uses all of its (clipped) cap: the run still ends at the deadline less the
    reserve, and the steps that find no time left are not started."""
    clock = Clock()
    budget = b.budget_for("gpu", 200.0)
    deadline = b.Deadline(budget, t0=clock.now, clock=clock)
    started = []
    for step in b.STEPS:
        cap = deadline.cap(step)
        if cap < b.MIN_STEP:
            continue
        started.append(step)
        clock.now += cap
    assert clock.now - deadline.t0 <= budget.total - budget.reserve + 1e-9
    assert started == ["env", "gpu_tests", "benches"]  # 30 + 120 + the 30 s left


def test_override_keeps_the_caps_and_shrinks_the_reserve():
    small = b.budget_for("tiny", 6.0)
    assert small.total == 6.0 and small.caps == b.TINY.caps
    assert small.reserve == pytest.approx(0.6)
    assert b.budget_for("gpu") is b.GPU


def test_start_time_from_the_script_only_when_recent(monkeypatch):
    monkeypatch.setattr(b, "process_start", lambda now: now - 1.0)
    now = 5000.0
    assert b.start_time({b.T0_ENV: "4990.5"}, now) == 4990.5
    assert b.start_time({b.T0_ENV: "1000"}, now) == now - 1.0  # stale: another run's
    assert b.start_time({b.T0_ENV: "6000"}, now) == now - 1.0  # in the future
    assert b.start_time({b.T0_ENV: "1733.N"}, now) == now - 1.0  # a date without %N
    assert b.start_time({}, now) == now - 1.0


def test_process_start_is_this_process():
    import time

    now = time.time()
    started = b.process_start(now)
    assert 0.0 <= now - started < 600.0  # this test session's start (or now off Linux)


def test_pytest_soft_deadline_comes_before_the_caps_sigterm():
    import time

    for cap in (3.0, 20.0, 140.0):
        before = time.time()
        soft = soft_deadline(cap) - before
        assert 0.0 < soft < cap - min(4.0, cap / 4)
