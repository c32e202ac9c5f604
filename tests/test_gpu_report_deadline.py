"""The GPU report holds its deadline (``specvlm.tools.gpu_report``): a step that hangs (and
ignores SIGTERM, and leaves a grandchild) is stopped within its time, the run ends within its
budget with a non-zero status, and REPORT.md, written as the run goes, names the step."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specvlm.tools.gpu_report import budget as b
from specvlm.tools.gpu_report import runner
from specvlm.tools.gpu_report.page import Record, write_page
from specvlm.tools.gpu_report.process import run_bounded
from specvlm.tools.gpu_report.steps import Context, StepFailed, StepSpec, pytest_judge

REPO = Path(__file__).resolve().parents[1]
SLACK = 2.0  # seconds beyond the budget: the parent's start-up, a loaded machine
ONLY_ENV = "gpu_tests,benches,expected,bench_table,e2e,decoders"  # perf_model follows decoders


def _report(out: Path, budget: float, hang: str, skip: str) -> tuple[subprocess.Popen, float]:
    env = dict(os.environ, PYTHONPATH=str(REPO), SPECVLM_REPORT_HANG=hang)
    env.pop(b.T0_ENV, None)
    cmd = [sys.executable, "-m", "specvlm.tools.gpu_report", "--tiny", "--out", str(out)]
    cmd += ["--budget", str(budget), "--skip", skip]
    began = time.monotonic()
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True), began


def test_hung_step_is_stopped_and_the_run_ends_within_its_budget(tmp_path):
    """``env`` hangs (40 s cap, clipped to the 6 s budget); ``expected`` finds no time left."""
    proc, began = _report(tmp_path, 6.0, "env,expected", ONLY_ENV.replace("expected,", ""))
    proc.communicate(timeout=60)
    elapsed = time.monotonic() - began
    assert elapsed < 6.0 + SLACK
    assert proc.returncode == 1
    page = (tmp_path / "REPORT.md").read_text()
    # the cap: 40 s, clipped to what the 6 s left after the start-up (importing torch)
    assert re.search(r"\*\*Partial report\.\*\* `env` TIMED OUT: overran its [1-5] s cap", page)
    assert "| env | TIMED OUT |" in page
    assert "| expected | not run |" in page and "out of time" in page
    assert "| e2e | skipped |" in page
    steps = {s["name"]: s for s in json.loads((tmp_path / "results.json").read_text())["steps"]}
    assert steps["env"]["status"] == "TIMED OUT" and steps["env"]["seconds"] < 6.0
    assert "hanging on purpose" in (tmp_path / "env.log").read_text()


def test_sigterm_to_the_report_stops_the_step_and_leaves_the_page(tmp_path):
    proc, began = _report(tmp_path, 60.0, "env", ONLY_ENV)
    page = tmp_path / "REPORT.md"
    while "| env | running |" not in (page.read_text() if page.exists() else ""):
        assert time.monotonic() - began < 20, "the page never said env was running"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert time.monotonic() - began < 20
    assert "| env | stopped |" in page.read_text()


def _hang_pids(log: Path, began: float) -> list[int]:
    """The hanging step's pid and its child's, from the line it prints."""
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        said = [line for line in lines if line.startswith("hanging on purpose")]
        if said:
            return [int(p) for p in said[0].split("pids", 1)[1].split()]
        assert time.monotonic() - began < 20, "the hanging step never started"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_step_dies_with_the_report_even_when_it_is_sigkilled(tmp_path):
    proc, began = _report(tmp_path, 60.0, "env", ONLY_ENV)
    step, grandchild = _hang_pids(tmp_path / "env.log", began)
    proc.kill()
    proc.wait(timeout=10)
    try:
        while _alive(step) and time.monotonic() - began < 20:
            time.sleep(0.05)
        assert not _alive(step)
        assert "| env | running |" in (tmp_path / "REPORT.md").read_text()
    finally:
        os.kill(grandchild, signal.SIGKILL)  # the step's own child is not covered


def test_run_bounded_stops_a_command_that_ignores_sigterm(tmp_path):
    log = tmp_path / "hang.log"
    began = time.monotonic()
    outcome = run_bounded([sys.executable, "-c", runner.HANG], 2.0, log, dict(os.environ), REPO)
    assert time.monotonic() - began < 2.0 + 0.5
    assert outcome.timed_out and outcome.returncode is None
    assert outcome.stopped_by == "SIGKILL"


def _spec(name: str, code: str) -> StepSpec:
    def judge(ctx, rc):
        if rc:
            raise StepFailed(f"exit status {rc}")
        return "done"

    return StepSpec(name, lambda ctx: [sys.executable, "-c", code], judge)


def test_steps_in_turn_page_rewritten_before_and_after_each(tmp_path):
    """A quick step, one that reads the page while it runs, one that overruns (its cap clipped
    to the time left), and one left without time: each recorded as such, the exit status 1."""
    page = tmp_path / "REPORT.md"
    sees_itself = (
        f"import sys; t = open({str(page)!r}).read(); "
        "sys.exit(0 if '| reader | running |' in t and '| quick | ok |' in t else 3)"
    )
    specs = [
        _spec("quick", "print('hello')"),
        _spec("reader", sees_itself),
        _spec("slow", "import time; time.sleep(60)"),
        _spec("late", "print('never')"),
    ]
    budget = b.Budget(total=4.0, reserve=0.4, caps=dict(quick=10.0, reader=10.0, slow=30.0, late=9))
    ctx = Context(tmp_path, True, b.Deadline(budget, time.time()))
    records = {s.name: Record(s.name, cap=budget.caps[s.name]) for s in specs}

    def show():
        write_page(tmp_path, "tiny", budget, ctx.deadline.elapsed(), list(records.values()))

    assert runner.run_all(specs, records, ctx, show) == 1
    assert ctx.deadline.elapsed() < budget.total
    status = {name: r.status for name, r in records.items()}
    assert status == {"quick": "ok", "reader": "ok", "slow": "TIMED OUT", "late": "not run"}
    assert records["slow"].cap < 4.0 and records["slow"].seconds < records["slow"].cap + 0.2
    text = page.read_text()
    assert "**Partial report.** `slow` TIMED OUT" in text and "Completed: quick, reader." in text


def _log(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / f"{name}.log").write_text(text)


def _ctx(tmp_path: Path, cuda: bool) -> Context:
    return Context(tmp_path, not cuda, b.Deadline(b.TINY, time.time()), cuda=cuda)


def test_pytest_exit_5_fails_and_all_skipped_passes_only_on_the_cpu(tmp_path):
    judge = pytest_judge("gpu_tests", need_a_pass=lambda ctx: ctx.cuda)
    _log(tmp_path, "gpu_tests", "no tests ran in 0.01s\n")
    with pytest.raises(StepFailed, match="collected no tests"):
        judge(_ctx(tmp_path, cuda=False), 5)
    _log(tmp_path, "gpu_tests", "338 skipped, 372 deselected in 1.48s\n")
    (tmp_path / "gpu_tests.xml").write_text(
        '<testsuites><testsuite tests="338" skipped="338" failures="0" errors="0"/></testsuites>'
    )
    assert "338 skipped" in judge(_ctx(tmp_path, cuda=False), 0)
    with pytest.raises(StepFailed, match="no test passed"):
        judge(_ctx(tmp_path, cuda=True), 0)
    with pytest.raises(StepFailed, match="exit status 1"):
        judge(_ctx(tmp_path, cuda=False), 1)


def test_pytest_soft_deadline_skips_the_rest_and_fails_the_step(tmp_path):
    tests = tmp_path / "test_three.py"
    tests.write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    note = tmp_path / "gpu_tests.deadline.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), SPECVLM_PYTEST_DEADLINE=str(time.time() - 1))
    env["SPECVLM_PYTEST_DEADLINE_NOTE"] = str(note)
    cmd = [sys.executable, "-m", "pytest", str(tests), "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "specvlm.tools.gpu_report.pytest_deadline"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(note.read_text())["not_run"] == 2
    _log(tmp_path, "gpu_tests", proc.stdout)
    with pytest.raises(StepFailed, match="2 tests not run"):
        pytest_judge("gpu_tests")(_ctx(tmp_path, cuda=False), 0)
