"""A pytest plugin (``-p specvlm.tools.gpu_report.pytest_deadline``): a soft deadline.

Once the time ``SPECVLM_PYTEST_DEADLINE`` (seconds since the epoch) has passed, every test not
yet started is skipped, so the session still ends by itself and writes what it has (the
benchmark JSON, the JUnit XML) before the report's hard cap would kill it. At the end the number
of tests so skipped goes to the JSON file ``SPECVLM_PYTEST_DEADLINE_NOTE``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

DEADLINE_ENV = "SPECVLM_PYTEST_DEADLINE"
NOTE_ENV = "SPECVLM_PYTEST_DEADLINE_NOTE"
REASON = "gpu_report: the step's time ran out before this test"
_not_run: list[str] = []


def _deadline() -> float:
    try:
        return float(os.environ.get(DEADLINE_ENV, "inf"))
    except ValueError:
        return float("inf")


def pytest_runtest_setup(item):
    if time.time() >= _deadline():
        import pytest  # here: the report's runner reads this module's names without pytest

        _not_run.append(item.nodeid)
        pytest.skip(REASON)


def pytest_sessionfinish(session, exitstatus):
    note = os.environ.get(NOTE_ENV)
    if note:
        Path(note).write_text(json.dumps({"not_run": len(_not_run), "first": _not_run[:5]}))
