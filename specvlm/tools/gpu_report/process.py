"""Run one command for at most a given time, whatever it does.

The command runs in a session (process group) of its own with its output going straight to a
log file (no pipe that a left-behind grandchild could hold open). At ``seconds - grace`` the
whole group gets SIGTERM, then SIGKILL, and past ``seconds`` the runner stops waiting even for
a process the kernel cannot reap (one stuck in a driver call): the call returns within
``seconds`` plus a few milliseconds in every case. Whatever the group left running after a
normal exit is killed too, and on Linux the command (not its own children) gets SIGKILL if
the report itself dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GRACE = 4.0  # seconds between SIGTERM and the end of the cap, at most
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before ``exec`` (Linux): SIGKILL when the report itself dies, even by a
    SIGKILL it could not handle, so no step outlives it holding the GPU."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


@dataclass
class Outcome:
    returncode: int | None  # None: it did not end by itself
    seconds: float
    timed_out: bool = False
    stopped_by: str = ""  # "SIGTERM", "SIGKILL" or "" (left behind: not even SIGKILL took)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(proc: subprocess.Popen, seconds: float) -> int | None:
    try:
        return proc.wait(timeout=max(0.0, seconds))
    except subprocess.TimeoutExpired:
        return None


def stop(proc: subprocess.Popen, grace: float) -> str:
    """SIGTERM to the group, SIGKILL after ``grace / 2``; gives up after ``grace``."""
    _signal_group(proc, signal.SIGTERM)
    if _wait(proc, grace / 2) is not None:
        _signal_group(proc, signal.SIGKILL)  # what the leader left
        return "SIGTERM"
    _signal_group(proc, signal.SIGKILL)
    return "SIGKILL" if _wait(proc, grace / 2) is not None else ""


class BoundedRun:
    """A started command; :meth:`finish` waits for it within the time it was given."""

    def __init__(self, cmd: list[str], seconds: float, log: Path, env: dict, cwd: Path):
        self.seconds = seconds
        self.grace = min(GRACE, seconds / 4)
        self.began = time.monotonic()
        with open(log, "wb") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def finish(self) -> Outcome:
        rc = _wait(self.proc, self.seconds - self.grace - (time.monotonic() - self.began))
        if rc is not None:
            _signal_group(self.proc, signal.SIGKILL)  # anything it left running
            return Outcome(rc, time.monotonic() - self.began)
        how = self.stop()
        return Outcome(None, time.monotonic() - self.began, timed_out=True, stopped_by=how)

    def stop(self) -> str:
        return stop(self.proc, self.grace)


def run_bounded(cmd: list[str], seconds: float, log: Path, env: dict, cwd: Path) -> Outcome:
    """Run ``cmd`` (its output written to ``log``) for at most ``seconds``."""
    return BoundedRun(cmd, seconds, log, env, cwd).finish()
