"""Turn pytest-benchmark JSON into a Markdown table and a roofline plot.

    pytest bench --benchmark-json=bench.json
    python bench/report.py bench.json --table docs/kernel_table.md --plot docs/roofline.png

Each benchmark must have stored ``flops``, ``bytes`` and, when timed, ``median_us`` in
``extra_info`` (see ``bench/_common.record_metrics``). The roofline uses the peak rates of the
GPU named in the records (``bench/_common.PEAKS``); for CPU records no roofline is drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PEAKS  # noqa: E402


def load_records(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    records = []
    for bench in data.get("benchmarks", []):
        info = dict(bench.get("extra_info", {}))
        if "median_us" not in info and bench.get("stats"):
            info["median_us"] = bench["stats"]["median"] * 1e6
        info["name"] = bench["name"]
        info["group"] = bench.get("group") or bench["name"].split("[")[0]
        records.append(info)
    return records


BASELINES = ("eager", "sdpa")  # the eager PyTorch path each kernel is compared with


def add_speedups(records: list[dict]) -> list[dict]:
    """``speedup`` of every timed record over the eager baseline of its group (same shape)."""
    base = {
        r["group"]: r["median_us"]
        for r in records
        if r.get("impl") in BASELINES and r.get("median_us")
    }
    for rec in records:
        ref = base.get(rec["group"])
        if ref and rec.get("median_us"):
            rec["speedup"] = ref / rec["median_us"]
    return records


def markdown_table(records: list[dict]) -> str:
    cols = [
        "name",
        "median_us",
        "speedup",
        "gbs",
        "tflops",
        "pct_hbm_peak",
        "pct_tc_peak",
        "device",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for rec in records:
        cells = []
        for col in cols:
            val = rec.get(col, "")
            cells.append(f"{val:.3g}" if isinstance(val, float) else str(val))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def roofline_plot(records: list[dict], out: Path) -> bool:
    timed = [r for r in records if r.get("median_us") and r.get("bytes")]
    peaks = next((PEAKS[k] for r in timed for k in PEAKS if k in str(r.get("device"))), None)
    if not timed or peaks is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    intensity = [max(r["flops"], 1.0) / r["bytes"] for r in timed]
    lo, hi = min(intensity) / 2, max(max(intensity) * 2, 1e3)
    xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    ax.loglog(
        xs,
        [min(peaks["tc16_tflops"], x * peaks["hbm_gbs"] / 1e3) for x in xs],
        "k-",
        label="roofline (datasheet)",
    )
    groups = sorted({r["group"] for r in timed})
    for group in groups:
        pts = [(i, r) for i, r in zip(intensity, timed, strict=True) if r["group"] == group]
        ax.scatter(
            [p[0] for p in pts],
            [max(p[1].get("tflops", 0.0), 1e-6) for p in pts],
            label=group,
            s=14,
        )
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"SpecVLM kernels on {timed[0].get('device')}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--table", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    records = add_speedups(load_records(args.json))
    if not records:
        print(f"no benchmarks in {args.json}", file=sys.stderr)
        return 1
    table = markdown_table(records)
    if args.table:
        args.table.write_text(table)
    else:
        print(table)
    if args.plot and not roofline_plot(records, args.plot):
        print("no GPU records with timings: roofline plot skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
