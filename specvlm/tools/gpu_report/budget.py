"""The report's time: one deadline for the whole run, and a cap for each step.

The deadline counts from the moment ``scripts/gpu_report.sh`` started (it exports
``SPECVLM_REPORT_T0``), so Python's start-up is inside it. A step may run for the smaller of
its cap and the time left before the deadline less a ``reserve`` (the last page, the exit); a
step that overruns is killed within that time (``process.run_bounded``). The caps of a mode add
up to less than its budget by ``margin`` or more, so on a healthy machine no step is ever cut
by another's overrun; the clipping to the time left is what holds the deadline when one is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

STEPS = (
    "env",
    "gpu_tests",
    "benches",
    "expected",
    "bench_table",
    "e2e",
    "decoders",
    "perf_model",
)
MIN_STEP = 2.0  # a step with less time than this left is not started
T0_ENV = "SPECVLM_REPORT_T0"
T0_MAX_AGE = 120.0  # an older (or future) start time is not this run's: ignored


@dataclass(frozen=True)
class Budget:
    total: float  # seconds, the whole run from the script's start
    reserve: float  # kept back at the end: the final page and the exit
    caps: Mapping[str, float]  # the most each step may take, kill included

    @property
    def margin(self) -> float:
        """What the caps leave of the budget beyond the reserve (start-up, the pages)."""
        return self.total - self.reserve - sum(self.caps.values())


# GPU: 8 minutes. The caps follow the work: compiling and running the gpu tests, the benches
# at the report shapes (eager and CUDA-graph rows), the CPU-only analytic model and plot, the
# micro pair, four real-config decoders at 4k-64k tokens (eager, then captured as CUDA graphs),
# and the perf-model fit.
GPU = Budget(
    total=480.0,
    reserve=10.0,
    caps={
        "env": 30.0,
        "gpu_tests": 120.0,
        "benches": 140.0,
        "expected": 20.0,
        "bench_table": 15.0,
        "e2e": 45.0,
        "decoders": 65.0,  # eager and captured (CUDA-graph) forwards
        "perf_model": 15.0,
    },
)
# --tiny (CI, a CPU): each cap is about 3x the step's longest time measured on the shared
# 2-core machine with both cores kept busy by two other processes (load average 8-10), where
# every step's process spends 5-15 s importing torch alone (docs in the package docstring).
TINY = Budget(
    total=620.0,
    reserve=15.0,
    caps={
        "env": 50.0,
        "gpu_tests": 90.0,
        "benches": 150.0,
        "expected": 35.0,
        "bench_table": 50.0,
        "e2e": 60.0,
        "decoders": 70.0,
        "perf_model": 50.0,
    },
)
BUDGETS = {"gpu": GPU, "tiny": TINY}


def budget_for(mode: str, total: float | None = None) -> Budget:
    """The mode's budget, or the same caps under another total (tests: a few seconds); the
    reserve shrinks with a smaller total (a tenth of it at most)."""
    base = BUDGETS[mode]
    if total is None:
        return base
    return Budget(total=total, reserve=min(base.reserve, 0.1 * total), caps=base.caps)


def process_start(now: float) -> float:
    """When this Python process started (Linux: ``/proc``), else ``now``: importing the
    package (torch included) happens before the report's own code runs."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime: clock ticks after boot
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return now
    return started if 0.0 <= now - started <= T0_MAX_AGE else now


def start_time(environ: Mapping[str, str], now: float) -> float:
    """When this run started: the script's ``SPECVLM_REPORT_T0`` if it is recent, else when
    this process started."""
    try:
        t0 = float(environ.get(T0_ENV, ""))
    except ValueError:
        return process_start(now)
    return t0 if 0.0 <= now - t0 <= T0_MAX_AGE else process_start(now)


class Deadline:
    """The run's deadline: ``t0 + budget.total``; steps end ``budget.reserve`` before it."""

    def __init__(self, budget: Budget, t0: float, clock: Callable[[], float] = time.time):
        self.budget, self.t0, self.clock = budget, t0, clock

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def left(self) -> float:
        """Seconds the steps may still use (the reserve excluded)."""
        return self.t0 + self.budget.total - self.budget.reserve - self.clock()

    def cap(self, step: str) -> float:
        """What ``step`` may take now: its cap, clipped to the time left (never negative)."""
        return max(0.0, min(self.budget.caps[step], self.left()))
