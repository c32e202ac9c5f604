"""The page, ``REPORT.md`` (and ``results.json``), rewritten after every change of a step's
state: whatever ends the run, even a kill of the whole process, the finished steps are on disk
and the page says which step was running, overran or failed."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from specvlm.tools.gpu_report.compare import measured_vs_expected

DONE = ("ok", "FAILED", "TIMED OUT", "not run", "skipped", "stopped")


@dataclass
class Record:
    name: str
    status: str = "pending"  # pending, running, then one of DONE
    seconds: float = 0.0
    cap: float = 0.0
    detail: str = ""
    files: list[str] = field(default_factory=list)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _header(out: Path, mode: str, env: dict) -> list[str]:
    where = f"{env.get('gpu', 'unknown')}, driver {env.get('driver', 'unknown')}"
    versions = (
        f"Python {env.get('python', '?')}, torch {env.get('torch', '?')} "
        f"(CUDA {env.get('cuda_runtime', '?')}), Triton {env.get('triton', '?')}, "
        f"transformers {env.get('transformers', '?')}"
    )
    gpu = f"* GPU: {where}"
    if "sms" in env:
        gpu += f", {env['sms']} SMs, {env['memory_gib']} GiB"
    return [
        f"# SpecVLM GPU report ({mode})",
        "",
        gpu,
        f"* Software: {versions}",
        f"* Host: {env.get('host', '?')} ({env.get('cpu', '?')}); "
        f"TRITON_INTERPRET={env.get('triton_interpret') or '-'}",
    ]


def _budget_lines(budget, elapsed: float) -> list[str]:
    caps = ", ".join(f"{k} {v:.0f}" for k, v in budget.caps.items())
    return [
        f"* Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {elapsed:.0f} s since the start",
        f"* Budget: {budget.total:.0f} s for the whole run; step caps (s): {caps} (sum "
        f"{sum(budget.caps.values()):.0f}; {budget.reserve:.0f} s kept for the last page)",
    ]


def status_line(records: list[Record]) -> str:
    """One sentence: complete, in progress, or partial and why."""
    running = [r for r in records if r.status == "running"]
    if running:
        r = running[0]
        return (
            f"**In progress, or killed during `{r.name}`** (cap {r.cap:.0f} s): this page is "
            "rewritten after every step; if the run is over, it ended during that step."
        )
    bad = [r for r in records if r.status not in ("ok", "skipped", "pending")]
    if not bad:
        return "**Complete**: every step finished within its cap."
    done = ", ".join(r.name for r in records if r.status == "ok") or "none"
    groups: dict[tuple[str, str], list[str]] = {}
    for r in bad:  # steps not run for one reason are named together
        groups.setdefault((r.status, r.detail[:160]), []).append(f"`{r.name}`")
    why = "; ".join(f"{', '.join(names)} {st}: {dt}" for (st, dt), names in groups.items())
    return f"**Partial report.** {why}. Completed: {done}."


def _steps_table(records: list[Record]) -> list[str]:
    lines = ["| step | status | seconds | cap s | result | files |", "|---|---|---|---|---|---|"]
    for r in records:
        detail = r.detail.replace("|", "/").replace("\n", " ")[:240]
        lines.append(
            f"| {r.name} | {r.status} | {r.seconds:.0f} | {r.cap:.0f} | {detail} "
            f"| {', '.join(r.files)} |"
        )
    return lines


def _e2e_table(data: dict) -> str:
    lines = [
        "| method | new tokens | tau | decode s | end-to-end s | decode speedup | e2e speedup "
        "| identical to target | video tokens kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(value, spec):
        return "-" if value is None else format(value, spec)

    for r in data["records"]:
        kept = f"{r.get('kept_video_tokens')} / {r.get('video_tokens')}"
        lines.append(
            f"| {r['method']} | {r['new_tokens']} | {f(r['mean_accepted_length'], '.2f')} "
            f"| {f(r['decode_s'], '.3f')} | {f(r['e2e_s'], '.3f')} "
            f"| {f(r['decode_speedup'], '.2f')} | {f(r['e2e_speedup'], '.2f')} "
            f"| {r['identical']} | {kept} |"
        )
    return "\n".join(lines) + "\n"


def _sections(out: Path, env: dict) -> list[str]:
    where = f"{env.get('gpu', 'unknown')}, driver {env.get('driver', 'unknown')}"
    lines = []
    compared = measured_vs_expected(out)
    if compared:
        lines += ["", f"## Kernels: measured on {where} vs the analytic H100 model", ""]
        lines += [compared]
    table = out / "bench_table.md"
    if table.exists():
        lines += ["", f"## Kernel benches ({where})", "", table.read_text()]
    e2e = _read_json(out / "e2e.json")
    if e2e:
        lines += ["", f"## Embedded pair end to end ({where}, {e2e['dtype']}, "]
        lines[-1] += f"{e2e['frames']} frames)"
        lines += ["", _e2e_table(e2e)]
    perf = out / "perf_model.md"
    if perf.exists():
        lines += ["", f"## Performance model fed with measured forwards ({where})", ""]
        lines += [perf.read_text()]
    return lines


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_page(out: Path, mode: str, budget, elapsed: float, records: list[Record]) -> Path:
    env = _read_json(out / "env.json") or {}
    lines = _header(out, mode, env) + _budget_lines(budget, elapsed)
    lines += ["", status_line(records), ""] + _steps_table(records) + _sections(out, env)
    page = out / "REPORT.md"
    _atomic_write(page, "\n".join(lines) + "\n")
    results = {
        "env": env,
        "budget": asdict(budget),
        "elapsed_s": elapsed,
        "steps": [asdict(r) for r in records],
    }
    _atomic_write(out / "results.json", json.dumps(results, indent=2, default=str))
    return page
