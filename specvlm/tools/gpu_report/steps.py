"""The report's steps: what each runs (always a process of its own), the files it leaves, and
how its exit is judged. The order is the page's; ``budget.py`` has each one's cap."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from specvlm.tools.gpu_report.budget import Deadline

REPO = Path(__file__).resolve().parents[3]
PYTEST_DEADLINE_PLUGIN = "specvlm.tools.gpu_report.pytest_deadline"
BENCH_FILES = (
    "bench/test_bench_attention_scores.py",
    "bench/test_bench_token_select.py",
    "bench/test_bench_tree_attention.py",
)


class StepFailed(Exception):
    """The step ended by itself but did not do its job (the message says why)."""


@dataclass
class Context:
    out: Path
    tiny: bool
    deadline: Deadline
    cuda: bool = False  # known once the env step has run
    current: object = None  # the running step's process (process.BoundedRun)

    @property
    def mode(self) -> str:
        return "tiny" if self.tiny else "gpu"


@dataclass(frozen=True)
class StepSpec:
    name: str
    command: Callable[[Context], list[str]]
    judge: Callable[[Context, int], str]  # exit status -> detail, or raises StepFailed
    outputs: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    pytest: bool = False  # gets the soft deadline (pytest_deadline)
    needs: tuple[tuple[str, str], ...] = ()  # (step, file) it reads


def log_tail(path: Path, lines: int = 1) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return " / ".join(line.strip() for line in text[-lines:] if line.strip())


# --------------------------------------------------------------------------------------------
# Python steps (child.py)
# --------------------------------------------------------------------------------------------
def child_command(name: str) -> Callable[[Context], list[str]]:
    def command(ctx: Context) -> list[str]:
        cmd = [sys.executable, "-m", "specvlm.tools.gpu_report.child", name, "--out", str(ctx.out)]
        return cmd + (["--tiny"] if ctx.tiny else [])

    return command


def child_judge(name: str) -> Callable[[Context, int], str]:
    def judge(ctx: Context, rc: int) -> str:
        result = ctx.out / f"{name}.result.json"
        if rc == 0 and result.exists():
            return json.loads(result.read_text())["detail"]
        error = log_tail(ctx.out / f"{name}_error.txt") or log_tail(ctx.out / f"{name}.log")
        raise StepFailed(f"exit status {rc}: {error}")

    return judge


# --------------------------------------------------------------------------------------------
# pytest steps
# --------------------------------------------------------------------------------------------
def pytest_command(paths: tuple[str, ...], extra: Callable[[Context], list[str]]):
    def command(ctx: Context) -> list[str]:
        cmd = [sys.executable, "-m", "pytest", *paths, "-q", "-rs", "-p", "no:cacheprovider"]
        return cmd + ["-p", PYTEST_DEADLINE_PLUGIN, *extra(ctx)]

    return command


def junit_counts(path: Path) -> dict[str, int]:
    """tests / skipped / failures / errors summed over the JUnit XML's suites."""
    counts = dict(tests=0, skipped=0, failures=0, errors=0)
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return counts


def pytest_judge(name: str, need_a_pass: Callable[[Context], bool] = lambda ctx: False):
    """Exit 0 only; 5 (nothing collected) fails; tests skipped by the soft deadline fail the
    step; with ``need_a_pass``, so does a session where nothing passed (GPU: all skipped)."""

    def judge(ctx: Context, rc: int) -> str:
        summary = log_tail(ctx.out / f"{name}.log")
        if rc == 5:
            raise StepFailed(f"pytest collected no tests (exit status 5): {summary}")
        if rc != 0:
            raise StepFailed(f"exit status {rc}: {summary}")
        note = ctx.out / f"{name}.deadline.json"
        not_run = json.loads(note.read_text())["not_run"] if note.exists() else 0
        if not_run:
            raise StepFailed(f"ran out of its time: {not_run} tests not run ({summary})")
        xml = ctx.out / f"{name}.xml"
        if need_a_pass(ctx) and xml.exists():
            c = junit_counts(xml)
            if c["tests"] - c["skipped"] - c["failures"] - c["errors"] <= 0:
                raise StepFailed(f"no test passed (all {c['tests']} skipped?): {summary}")
        return summary

    return judge


def _gpu_tests_extra(ctx: Context) -> list[str]:
    return ["-m", "gpu", f"--junitxml={ctx.out / 'gpu_tests.xml'}"]


def _benches_extra(ctx: Context) -> list[str]:
    out = ctx.out
    return [
        f"--benchmark-json={out / 'bench.json'}",
        f"--junitxml={out / 'benches.xml'}",
        f"--benchmark-min-rounds={1 if ctx.tiny else 3}",  # the interpreter: 0.1-0.5 s a call
        "--benchmark-max-time=0.02",
        "--benchmark-warmup=off",
    ]


# --------------------------------------------------------------------------------------------
# Scripts under bench/
# --------------------------------------------------------------------------------------------
def _expected_command(ctx: Context) -> list[str]:
    return [sys.executable, "bench/roofline.py", "--json", str(ctx.out / "expected.json"), "--all"]


def _expected_judge(ctx: Context, rc: int) -> str:
    if rc != 0:
        raise StepFailed(f"exit status {rc}: {log_tail(ctx.out / 'expected.log')}")
    rows = json.loads((ctx.out / "expected.json").read_text())
    bound = sum(1 for r in rows if r.get("launch_bound"))
    return f"{len(rows)} cases expected on an H100 ({bound} launch-bound when eager)"


def _table_command(ctx: Context) -> list[str]:
    out = ctx.out
    cmd = [sys.executable, "bench/report.py", str(out / "bench.json")]
    return cmd + ["--table", str(out / "bench_table.md"), "--plot", str(out / "roofline.png")]


def _table_judge(ctx: Context, rc: int) -> str:
    if rc != 0:
        raise StepFailed(f"exit status {rc}: {log_tail(ctx.out / 'bench_table.log')}")
    plot = "with" if (ctx.out / "roofline.png").exists() else "no"
    return f"table, {plot} roofline plot"


SPECS = (
    StepSpec("env", child_command("env"), child_judge("env"), ("env.json",)),
    StepSpec(
        "gpu_tests",
        pytest_command(("tests/kernels",), _gpu_tests_extra),
        pytest_judge("gpu_tests", need_a_pass=lambda ctx: ctx.cuda),
        ("gpu_tests.xml",),
        pytest=True,
    ),
    StepSpec(
        "benches",
        pytest_command(BENCH_FILES, _benches_extra),
        pytest_judge("benches"),
        ("bench.json", "benches.xml"),
        env={"SPECVLM_BENCH_SHAPES": "report"},
        pytest=True,
    ),
    # the analytic expectations: launches recorded on meta tensors, no GPU, no interpreter
    StepSpec(
        "expected",
        _expected_command,
        _expected_judge,
        ("expected.json",),
        env={"TRITON_INTERPRET": ""},
    ),
    StepSpec(
        "bench_table",
        _table_command,
        _table_judge,
        ("bench_table.md", "roofline.png"),
        needs=(("benches", "bench.json"),),
    ),
    StepSpec("e2e", child_command("e2e"), child_judge("e2e"), ("e2e.json",)),
    StepSpec("decoders", child_command("decoders"), child_judge("decoders"), ("decoders.json",)),
    StepSpec(
        "perf_model",
        child_command("perf_model"),
        child_judge("perf_model"),
        ("perf_model.md", "perf_model.json"),
        needs=(("decoders", "decoders.json"),),
    ),
)
