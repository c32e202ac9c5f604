"""Each timed kernel case beside its analytic H100 expectation in the same regime.

A bench record (``bench.json``) says its regime (``extra_info["regime"]``: ``eager`` calls with
a synchronize each, or ``graph`` replays; ``bench/_common.py``); ``bench/roofline.py`` gives
every case an expectation in both (``expected_eager_us``, and ``expected_us`` for graph
replay), so a launch-bound case timed eagerly is held to the eager expectation, its graph
replays to the graph one.
"""

from __future__ import annotations

import json
from pathlib import Path

EXPECTED_FIELD = {"eager": "expected_eager_us", "graph": "expected_us"}


def bench_key(info: dict) -> tuple | None:
    """The roofline case a bench record measures (triton / static implementations only)."""
    impl = info.get("impl")
    if "Lq" in info and impl == "triton":
        return ("scores", info["model"], info["Nv"], info["Lq"], info["dtype"])
    if "N" in info and impl in ("triton", "static"):
        op = "tree" if impl == "triton" else "tree-static"
        return (op, info["model"], info["L"], info["N"], info["dtype"])
    if "layout" in info and impl == "triton":
        if "C" in info:
            return ("prune", info["layout"], info["Nv"], info["keep"], info["C"])
        return ("select", info["layout"], info["Nv"], info["keep"])
    return None


def expected_key(row: dict) -> tuple | None:
    op, s = row["op"], row["shape"]
    if op == "scores":
        return (op, s["model"], s["Nv"], s["Lq"], s["dtype"])
    if op in ("tree", "tree-static"):
        return (op, s["model"], s["L"], s["N"], s["dtype"])
    if op == "prune":
        return (op, s["layout"], s["Nv"], s["keep"], s["C"])
    if op == "select":
        return (op, s["layout"], s["Nv"], s["keep"])
    return None


def expected_us(row: dict | None, regime: str) -> float | None:
    """The expectation of ``row`` in ``regime`` (``eager`` or ``graph``)."""
    if row is None:
        return None
    return row.get(EXPECTED_FIELD.get(regime, "expected_eager_us"))


def _fmt(value, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def _row(rec: dict, exp: dict) -> str | None:
    info = rec.get("extra_info", {})
    key = bench_key(info)
    if key is None:
        return None
    regime = info.get("regime", "eager")
    us = info.get("median_us") or rec["stats"]["median"] * 1e6 / info.get("calls_per_round", 1)
    row = exp.get(key)
    e_us = expected_us(row, regime)
    ratio = f"{us / e_us:.2f}" if e_us else "-"
    bound = "-" if row is None else ("yes" if row.get("launch_bound") else "no")
    return (
        f"| {rec['name']} | {regime} | {us:.1f} | {_fmt(e_us, '.1f')} | {ratio} | {bound} "
        f"| {_fmt(info.get('gbs'))} | {_fmt(info.get('tflops'), '.1f')} "
        f"| {_fmt(info.get('pct_hbm_peak'))} | {_fmt(info.get('pct_tc_peak'))} |"
    )


def graph_note(records: list[dict]) -> str:
    """What the page says about the graph-replay rows."""
    infos = [r.get("extra_info", {}) for r in records]
    if any(i.get("regime") == "graph" for i in infos):
        return "Graph-replay rows: the op captured in a CUDA graph, 20 replays per timed round."
    if any(str(i.get("device", "")).startswith("cpu") for i in infos):
        return (
            "Graph-replay rows: **not run** (no CUDA device: there are no CUDA graphs on the "
            "CPU); every row here is an eager call."
        )
    return "Graph-replay rows: **none recorded** (the graph benches did not run)."


def measured_vs_expected(out: Path) -> str:
    """Markdown: each timed kernel case beside its analytic H100 expectation, same regime."""
    bench, expected = out / "bench.json", out / "expected.json"
    if not bench.exists() or not expected.exists():
        return ""
    exp = {expected_key(r): r for r in json.loads(expected.read_text())}
    records = json.loads(bench.read_text()).get("benchmarks", [])
    lines = [
        graph_note(records),
        "",
        "| case | regime | measured us | expected us (H100 model, same regime) "
        "| measured / expected | launch-bound (model) | GB/s | TFLOP/s | % HBM peak "
        "| % TC peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [line for rec in records if (line := _row(rec, exp))]
    return "\n".join(lines) + "\n"
