"""The command: every step in a process of its own, bounded by its cap and by the run's one
deadline, the page rewritten after each (see the package docstring)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from specvlm.tools.gpu_report import budget as budgets
from specvlm.tools.gpu_report import pytest_deadline
from specvlm.tools.gpu_report.page import Record, write_page
from specvlm.tools.gpu_report.process import BoundedRun
from specvlm.tools.gpu_report.steps import REPO, SPECS, Context, StepFailed, StepSpec

HANG_ENV = "SPECVLM_REPORT_HANG"  # test hook: steps (comma-separated) that hang instead of running
HANG = (  # ignores SIGTERM, and leaves a grandchild holding the log open
    "import os, signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
    "print(f'hanging on purpose (SPECVLM_REPORT_HANG): pids {os.getpid()} {kid.pid}', flush=True)\n"
    "time.sleep(3600)\n"
)
NO_CUDA = "no CUDA device here; use --tiny for the CPU run"


class Stopped(Exception):
    """The report itself got a signal (SIGTERM, SIGINT, SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    def handler(signum, frame):
        raise Stopped(signum)

    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    saved = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def soft_deadline(cap: float) -> float:
    """When a pytest step stops starting tests: before the cap's SIGTERM, with room for the
    test then running and for writing the session's files."""
    return time.time() + cap - min(4.0, cap / 4) - min(30.0, max(2.0, 0.15 * cap))


def step_env(spec: StepSpec, ctx: Context, cap: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if ctx.cuda or not ctx.tiny:
        env.pop("TRITON_INTERPRET", None)  # on a GPU the kernels must run compiled
    env.update(spec.env)
    if spec.pytest:
        env[pytest_deadline.DEADLINE_ENV] = repr(soft_deadline(cap))
        env[pytest_deadline.NOTE_ENV] = str(ctx.out / f"{spec.name}.deadline.json")
    return env


def _command(spec: StepSpec, ctx: Context) -> list[str]:
    hang = {s.strip() for s in os.environ.get(HANG_ENV, "").split(",")}
    return [sys.executable, "-c", HANG] if spec.name in hang else spec.command(ctx)


def _files(spec: StepSpec, out: Path) -> list[str]:
    names = [f"{spec.name}.log", *spec.outputs, f"{spec.name}_error.txt"]
    return [n for n in names if (out / n).exists()]


def run_step(spec: StepSpec, rec: Record, ctx: Context, cap: float) -> None:
    """Run one step for at most ``cap`` seconds and judge it into ``rec``."""
    log = ctx.out / f"{spec.name}.log"
    run = BoundedRun(_command(spec, ctx), cap, log, step_env(spec, ctx, cap), REPO)
    ctx.current = run
    outcome = run.finish()
    ctx.current = None
    rec.seconds = outcome.seconds
    if outcome.timed_out:
        how = outcome.stopped_by or "SIGKILL, and left behind (not reaped)"
        rec.status = "TIMED OUT"
        rec.detail = f"overran its {cap:.0f} s cap: stopped by {how}; see {spec.name}.log"
    else:
        try:
            rec.detail, rec.status = spec.judge(ctx, outcome.returncode), "ok"
        except StepFailed as err:
            rec.detail, rec.status = str(err), "FAILED"
        except (OSError, ValueError, KeyError) as err:  # unreadable outputs
            rec.detail, rec.status = f"{type(err).__name__}: {err}", "FAILED"
    rec.files = _files(spec, ctx.out)


def blocked(spec: StepSpec, records: dict[str, Record], ctx: Context) -> tuple[str, str]:
    """``(status, why)`` when ``spec`` cannot run now (``("", "")`` if it can): "skipped" after
    a skipped prerequisite, else "not run"."""
    for step, name in spec.needs:
        if records[step].status == "skipped":
            return "skipped", f"needs {step}, skipped"
        if not (ctx.out / name).exists():
            return "not run", f"needs {name} from {step} ({records[step].status})"
    left = ctx.deadline.left()
    if ctx.deadline.cap(spec.name) < budgets.MIN_STEP:
        return "not run", f"out of time: {max(left, 0.0):.0f} s left of the run's budget"
    return "", ""


def _after_env(ctx: Context, rec: Record) -> bool:
    """Read the env step's findings; False when this GPU run has no GPU."""
    import json

    env_file = ctx.out / "env.json"
    if rec.status == "ok" and env_file.exists():
        ctx.cuda = bool(json.loads(env_file.read_text()).get("cuda"))
    else:
        ctx.cuda = not ctx.tiny  # unknown: assume the mode's device
    return ctx.cuda or ctx.tiny


def run_all(specs, records: dict[str, Record], ctx: Context, show) -> int:
    show()
    for spec in specs:
        rec = records[spec.name]
        if rec.status != "pending":
            continue
        status, reason = blocked(spec, records, ctx)
        if status:
            rec.status, rec.detail = status, reason
        else:
            cap = ctx.deadline.cap(spec.name)
            rec.status, rec.cap = "running", cap
            show()
            run_step(spec, rec, ctx, cap)
        print(f"[gpu_report] {spec.name}: {rec.status} ({rec.seconds:.0f} s) {rec.detail[:120]}")
        show()
        if spec.name == "env" and not _after_env(ctx, rec):
            for other in records.values():
                if other.status == "pending":
                    other.status, other.detail = "not run", NO_CUDA
            print(f"gpu_report: {NO_CUDA}", file=sys.stderr)
            return 2
    return 0 if all(r.status in ("ok", "skipped") for r in records.values()) else 1


def _stopped(stop: Stopped, records: dict[str, Record], ctx: Context) -> int:
    run = ctx.current
    if run is not None:
        run.stop()
    for rec in records.values():
        if rec.status == "running":
            rec.status, rec.detail = "stopped", f"the report got {stop}"
            rec.seconds = time.monotonic() - run.began if run is not None else 0.0
        elif rec.status == "pending":
            rec.status, rec.detail = "not run", f"the report got {stop}"
    return 128 + stop.signum


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from specvlm.tools import gpu_report

    parser = argparse.ArgumentParser(description=gpu_report.__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU run with small shapes (CI)")
    parser.add_argument("--out", default=None, help="results folder (default gpu-report-<time>)")
    parser.add_argument(
        "--skip", default="", help="comma-separated steps to skip: " + ",".join(budgets.STEPS[1:])
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole run instead of the mode's (tests); the caps are clipped to it",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = budgets.start_time(os.environ, time.time())
    budget = budgets.budget_for("tiny" if args.tiny else "gpu", args.budget)
    out = Path(args.out or f"gpu-report-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out, args.tiny, budgets.Deadline(budget, t0))
    records = {s.name: Record(s.name, cap=budget.caps[s.name]) for s in SPECS}
    for name in (s.strip() for s in args.skip.split(",") if s.strip()):
        if name not in records or name == "env":
            raise SystemExit(f"gpu_report: --skip {name}: not a step that can be skipped")
        records[name].status = "skipped"

    def show():
        write_page(out, ctx.mode, budget, ctx.deadline.elapsed(), list(records.values()))

    try:
        with stop_on_signals():
            code = run_all(SPECS, records, ctx, show)
    except Stopped as stop:
        code = _stopped(stop, records, ctx)
    show()
    print(f"[gpu_report] {out / 'REPORT.md'} ({ctx.deadline.elapsed():.0f} s)")
    return code
