"""``specvlm bench``: every method on the same inputs, over sweeps of drop rate, frames and tree
size; a summary table, then results as JSON, CSV and plots.

A *workload* provides the models and inputs: ``workload.target``, ``workload.draft`` and
``workload.inputs(frames, seed) -> dict`` (processor outputs for one prompt). Each sweep point
runs every method on ``prompts`` inputs (seeds ``0 .. prompts-1``) and sums times and tokens
over them; tau is the mean over prompts. The ``random`` ablation draws its own subset for each
input (its seed is the input's plus ``--seed``), not one set of positions for all of them.
Every repeat's times are kept (``runs``: each repeat's times summed over the inputs), and the
plots draw their spread as error bars.

Order of work: every argument and the output directory are checked before a model loads; the
summary table is printed before the files are written.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from specvlm.micro.data import held_out_clip
from specvlm.tools.arguments import check_bench_args
from specvlm.tools.common import (
    METHODS,
    ToolError,
    checkpoint_pair,
    describe_sampling,
    hardware,
    inputs_to,
    load_pair,
)
from specvlm.tools.comparison import add_speedups, compare, decode_speedup, e2e_speedup
from specvlm.tools.video_input import VideoPrompter
from specvlm.trees import tree_of_size

FIELDS = (
    "method",
    "mode",
    "mean_accepted_length",
    "new_tokens",
    "decode_s",
    "decode_tokens_per_s",
    "e2e_s",
    "ttft_s",
    "peak_memory_bytes",
    "decode_speedup",
    "e2e_speedup",
    "decode_speedup_vs_compiled",
    "e2e_speedup_vs_compiled",
    "identical",
    "drop_rate",
    "frames",
    "video_tokens",
    "tree_size",
    "sweep",
    "prompts",
    "repeats",
    "warmup_s",
    "captured",
    "error",
)

# one colour per method, the same in every plot
COLORS = {
    "autoregressive": "#333333",
    "naive_sd": "#9467bd",
    "assisted_generation": "#8c564b",
    "specvlm": "#d62728",
    "dynamic": "#bcbd22",
    "overlap": "#e377c2",
    "auto": "#17becf",
    "attention": "#ff7f0e",
    "uniform": "#2ca02c",
    "random": "#1f77b4",
    "autoregressive_compiled": "#7f7f7f",
}
MARKERS = dict(zip(COLORS, "osD<^XvP*hp", strict=True))


@dataclass
class SweepPoint:
    sweep: str  # "drop_rate" | "frames" | "tree_size"
    drop_rate: float
    frames: int
    tree_size: int


def sweep_points(
    quick: bool,
    *,
    drop_rates=None,
    frames=None,
    tree_sizes=None,
    base_frames: int = 8,
    longest: int | None = None,
) -> list[SweepPoint]:
    """``longest``: the most frames the pair takes (:meth:`CheckpointWorkload.max_frames`); the
    frames sweep then goes on to 4x the base and to that many frames (long clips)."""
    drop_rates = drop_rates or ((0.5, 0.75, 0.9) if quick else (0.5, 0.75, 0.9, 0.95))
    frames = frames or (
        (4, base_frames, 2 * base_frames) if quick else (2, 4, base_frames, 2 * base_frames)
    )
    if longest is not None:
        frames = sorted({f for f in (*frames, 4 * base_frames, longest) if f <= longest})
    tree_sizes = tree_sizes or ((4, 16, 48) if quick else (1, 4, 8, 24, 48, 64))
    points = [SweepPoint("drop_rate", d, base_frames, 48) for d in drop_rates]
    points += [SweepPoint("frames", 0.9, f, 48) for f in frames]
    points += [SweepPoint("tree_size", 0.9, base_frames, n) for n in tree_sizes]
    return points


def _sum(values):
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def _merge(runs: list[list[dict]]) -> list[dict]:
    """Sum times/tokens of the same method over prompts (and each repeat's times over prompts,
    in ``runs``); tau averaged (the clips' own in ``tau_per_prompt``); identical all-true;
    speedups per token against ``autoregressive``, also per repeat (``*_speedup_runs``)."""
    merged = []
    for per_method in zip(*runs, strict=True):
        rec = dict(per_method[0])
        ok = [r for r in per_method if r["error"] is None]
        if len(ok) != len(per_method):
            rec["error"] = next(r["error"] for r in per_method if r["error"] is not None)
        for key in ("new_tokens", "decode_s", "e2e_s", "ttft_s"):
            rec[key] = _sum(r.get(key) for r in ok)
        taus = [r["mean_accepted_length"] for r in ok if r["mean_accepted_length"] is not None]
        rec["mean_accepted_length"] = sum(taus) / len(taus) if taus else None
        rec["tau_per_prompt"] = taus
        peaks = [r["peak_memory_bytes"] for r in ok if r.get("peak_memory_bytes") is not None]
        rec["peak_memory_bytes"] = max(peaks) if peaks else None
        idents = [r["identical"] for r in per_method]
        rec["identical"] = None if any(i is None for i in idents) else all(idents)
        repeats = min((len(r.get("runs") or ()) for r in ok), default=0)
        rec["runs"] = [
            {k: _sum(r["runs"][i].get(k) for r in ok) for k in ("new_tokens", "decode_s", "e2e_s")}
            for i in range(repeats)
        ]
        rec["prompts"] = len(per_method)
        rec["repeats"] = repeats
        rec.update(_merged_extras(per_method))
        merged.append(rec)
    add_speedups(merged, first_tokens=len(runs))
    ref = next((r for r in merged if r["method"] == "autoregressive"), {})
    for rec in merged:
        dec = rec.get("decode_s")
        tokens = rec.get("new_tokens") or 0
        rec["decode_tokens_per_s"] = (tokens - len(runs)) / dec if dec else None
        pairs = list(zip(ref.get("runs") or (), rec["runs"], strict=False))
        rec["decode_speedup_runs"] = [decode_speedup(a, b, len(runs)) for a, b in pairs]
        rec["e2e_speedup_runs"] = [e2e_speedup(a, b) for a, b in pairs]
    return merged


def _merged_extras(per_method: list[dict]) -> dict:
    """``warmup_s`` (the compiled baseline's untimed warm-ups) summed over the clips;
    ``captured`` true only where every clip's call ran captured draft steps (None for the
    methods that have neither)."""
    captured = None
    if any("captured" in r for r in per_method):
        captured = all(r.get("captured") for r in per_method)
    return {"warmup_s": _sum(r.get("warmup_s") for r in per_method), "captured": captured}


def run_sweeps(
    workload,
    points: list[SweepPoint],
    *,
    methods=METHODS,
    prompts: int = 2,
    max_new_tokens: int = 32,
    repeats: int = 1,
    sampling: dict | None = None,
    seed: int = 0,
    capture="auto",
    progress=None,
) -> list[dict]:
    """Every method on ``prompts`` inputs per point; ``sampling`` / ``seed`` / ``capture``: see
    :func:`specvlm.tools.comparison.compare` (input ``i`` uses ``seed + i``, for sampling and
    for the ``random`` selector)."""
    results = []
    for point in points:
        runs = []
        for index in range(prompts):
            inputs = workload.inputs(point.frames, index)
            records = compare(
                workload.target,
                workload.draft,
                inputs,
                methods,
                max_new_tokens=max_new_tokens,
                drop_rate=point.drop_rate,
                tree=tree_of_size(point.tree_size),
                repeats=repeats,
                random_seed=seed + index,
                sampling=sampling,
                seed=seed + index,
                capture=capture,
                frames=point.frames,
                tree_size=point.tree_size,
                sweep=point.sweep,
                point_drop_rate=point.drop_rate,
            )
            runs.append(records)
            if progress is not None:
                progress(1)
        merged = _merge(runs)
        video = next((r["video_tokens"] for r in merged if r.get("video_tokens")), None)
        for rec in merged:
            rec["video_tokens"] = video
        results.extend(merged)
    return results


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _cells(r: dict) -> tuple[str, ...]:
    """One result as the cells of a table row (the summary's and the report's)."""
    ident = {True: "yes", False: "NO", None: "-"}[r.get("identical")]
    if r.get("error"):
        ident = "error: " + r["error"].split(":")[0]
    return (
        r["sweep"],
        f"{r['drop_rate']:g}",
        str(r["frames"]),
        _fmt(r.get("video_tokens"), "d"),
        str(r["tree_size"]),
        r["method"],
        _fmt(r.get("mean_accepted_length"), ".2f"),
        _times(r.get("decode_speedup")),
        _times(r.get("e2e_speedup")),
        _times(r.get("decode_speedup_vs_compiled")),
        _times(r.get("e2e_speedup_vs_compiled")),
        _fmt(r.get("decode_tokens_per_s"), ".0f"),
        ident,
    )


def _times(speedup: float | None) -> str:
    return _fmt(speedup, ".2f") + "x" * (speedup is not None)


def summary_table(results: list[dict]) -> str:
    """The results as a plain-text table, one row per sweep point and method."""
    head = ("sweep", "drop", "frames", "video", "tree", "method", "tau", "decode", "e2e")
    head += ("decode/c", "e2e/c", "tok/s")
    rows = [head + ("identical",)] + [_cells(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) + 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_report(results: list[dict], meta: dict, plots: list[str]) -> str:
    """The page a run writes as ``report.md``: how it was made (command, hardware, versions,
    date), its plots and its table. Pages that cite measured numbers link to it instead of
    copying them."""
    import datetime

    import transformers

    head = ("sweep", "drop rate", "frames", "video tokens", "tree", "method", "tau", "decode")
    head += ("e2e", "decode vs compiled", "e2e vs compiled", "decode tok/s", "identical")
    lines = [
        "# `specvlm bench` report",
        "",
        "Generated by the command below; do not edit by hand (run it again).",
        "",
        f"- command: `{meta.get('command', 'specvlm bench')}`",
        f"- hardware: {meta.get('hardware', '?')}",
        f"- versions: torch {torch.__version__}, transformers {transformers.__version__}",
        f"- date: {datetime.date.today().isoformat()}",
        f"- decoding: {meta.get('mode', '?')}",
        "",
    ]
    lines += [
        "Speedups are per token against two baselines: `decode` and `e2e` against "
        "`autoregressive` (the target's eager `generate`), `decode vs compiled` and `e2e vs "
        "compiled` against `autoregressive_compiled` (`generate` with a static cache and "
        "`torch.compile`)." + _warmup_note(results),
        "",
    ]
    lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in results]
    return "\n".join(lines) + "\n"


def _warmup_note(results: list[dict]) -> str:
    """The compiled baseline's warm-up (compile) seconds, which are in none of its times."""
    warm = [r["warmup_s"] for r in results if r.get("warmup_s") is not None]
    if not warm:
        return ""
    return (
        f" Its warm-up calls (one untimed call per new shape, the compile included) took "
        f"{sum(warm):.1f} s in all, {max(warm):.1f} s at most per sweep point; they are in "
        "none of its times."
    )


def write_results(results: list[dict], out_dir: str, meta: dict | None = None) -> list[str]:
    """``results.json``, ``results.csv``, the PNG plots and ``report.md``; returns the paths
    written. ``meta`` (``hardware``, ``mode``, ``command``) goes into the plots' titles and the
    report."""
    meta = meta or {}
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "results.json"), os.path.join(out_dir, "results.csv")]
    with open(paths[0], "w") as f:
        json.dump(results, f, indent=1)
    with open(paths[1], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    plots = plot_results(results, out_dir, meta)
    report = os.path.join(out_dir, "report.md")
    with open(report, "w") as f:
        f.write(markdown_report(results, meta, plots))
    return paths + plots + [report]


def _standard_error(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5


def _draw(ax, recs: list[dict], x_of, quantity: str) -> None:
    """One line per method (in :data:`METHODS` order, its own colour and marker): ``quantity``
    ``"tau"`` (bars: standard error over the clips) or ``"decode"`` / ``"e2e"`` speedup (the
    fastest-of-repeats value; bars: from the lowest to the highest speedup of one repeat, repeat
    r of the method against repeat r of the target)."""
    for method in METHODS:
        mine = sorted((r for r in recs if r["method"] == method), key=x_of)
        key = "mean_accepted_length" if quantity == "tau" else f"{quantity}_speedup"
        mine = [r for r in mine if r.get(key) is not None]
        if not mine or (quantity != "tau" and method == "autoregressive"):
            continue
        xs, ys = [x_of(r) for r in mine], [r[key] for r in mine]
        style = dict(color=COLORS[method], capsize=3, linewidth=1.0)
        if quantity == "tau":
            se = [_standard_error(r.get("tau_per_prompt") or []) for r in mine]
            ax.errorbar(xs, ys, yerr=se, fmt="none", **style)
        else:
            for x, r in zip(xs, mine, strict=True):
                runs = [v for v in r.get(key + "_runs") or [] if v is not None]
                if runs:
                    mid, half = (min(runs) + max(runs)) / 2, (max(runs) - min(runs)) / 2
                    ax.errorbar([x], [mid], yerr=[half], fmt="none", **style)
        ax.plot(
            xs,
            ys,
            color=COLORS[method],
            marker=MARKERS[method],
            markersize=5,
            linewidth=1.4,
            label=method + (" (drop 0)" if method == "naive_sd" else ""),
        )
    if quantity != "tau":
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.grid(alpha=0.3)


def plot_results(results: list[dict], out_dir: str, meta: dict | None = None) -> list[str]:
    """Three figures, two panels each, one colour per method everywhere:
    ``tau_vs_drop_rate.png`` (tau and decode speedup against the drop rate),
    ``speedup_vs_video_tokens.png`` (decode and end-to-end speedup against the video tokens,
    the frames sweep) and ``tree_size.png`` (tau and decode speedup against the tree size).
    Titles give the hardware, clips per point, repeats and the fixed settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = meta or {}
    labels = {
        "tau": "tau (tokens per target forward)",
        "decode": "decode speedup vs target generate",
        "e2e": "end-to-end speedup vs target generate",
    }
    figures = (
        (
            "drop_rate",
            "tau_vs_drop_rate.png",
            "drop rate (share of video tokens the draft does not see)",
            lambda r: r.get("point_drop_rate", r["drop_rate"]),
            ("tau", "decode"),
            "tau and speed against the drop rate",
        ),
        (
            "frames",
            "speedup_vs_video_tokens.png",
            "video tokens (the frames sweep)",
            lambda r: r.get("video_tokens") or 0,
            ("decode", "e2e"),
            "speed against the video length (drop rate 0.9)",
        ),
        (
            "tree_size",
            "tree_size.png",
            "draft tree size (nodes)",
            lambda r: r["tree_size"],
            ("tau", "decode"),
            "tau and speed against the draft tree size (drop rate 0.9)",
        ),
    )
    written = []
    for sweep, name, xlabel, x_of, quantities, what in figures:
        recs = [r for r in results if r["sweep"] == sweep]
        if not recs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0), layout="constrained")
        for ax, quantity in zip(axes, quantities, strict=True):
            _draw(ax, recs, x_of, quantity)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(labels[quantity])
            xs = sorted({x_of(r) for r in recs if r["method"] != "naive_sd"})
            ax.set_xticks(xs)
        fig.suptitle(_title(what, recs, sweep, meta, "tau" in quantities), fontsize=9)
        handles, names = axes[-1].get_legend_handles_labels()
        if quantities[0] == "tau":  # methods without a tau still need their legend entry
            more = axes[0].get_legend_handles_labels()
            for h, n in zip(*more, strict=True):
                if n not in names:
                    handles.append(h)
                    names.append(n)
        fig.legend(handles, names, loc="outside right center", fontsize=8, frameon=False)
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _title(what: str, recs: list[dict], sweep: str, meta: dict, tau: bool) -> str:
    first = recs[0]
    fixed = []
    if sweep != "tree_size":
        fixed.append(f"tree of {first['tree_size']} nodes")
    if sweep != "frames":
        fixed.append(f"{first['frames']} frames")
    clips = first.get("prompts", "?")
    repeats = first.get("repeats") or "?"
    mode = meta.get("mode", first.get("mode", "greedy"))
    line2 = (
        f"{clips} held-out clip{'s' * (clips != 1)} per point, {', '.join(fixed)}, {mode}; "
        f"speedup bars: range of the {repeats} repeats" + (", tau bars: s.e. over clips" * tau)
    )
    where = meta.get("hardware") or hardware()
    return f"specvlm bench: {what}, on {where}\n{line2}"


# -------------------------------------------------------------------------------------------
# `specvlm bench`
# -------------------------------------------------------------------------------------------
class CheckpointWorkload:
    """A target/draft checkpoint pair asked about generated held-out clips (one per seed)."""

    def __init__(self, target_dir: str, draft_dir: str, device, prompt: str):
        from transformers import AutoConfig

        self.prompter = VideoPrompter(target_dir, AutoConfig.from_pretrained(target_dir))
        self.target, self.draft = load_pair(target_dir, draft_dir, device)
        self.device, self.prompt = device, prompt

    def inputs(self, frames: int, seed: int) -> dict:
        video = held_out_clip(seed, frames=frames)
        return inputs_to(self.prompter(video, self.prompt), self.device)

    def max_frames(self, max_new_tokens: int, cap: int = 64) -> int:
        """The most frames (up to ``cap``) whose prompt and answer fit the target's positions
        (``max_position_embeddings``; 1024 for the embedded pair: 60 frames)."""
        limit = self.target.config.get_text_config().max_position_embeddings
        one, two = (self.prompter(held_out_clip(0, frames=f), self.prompt) for f in (1, 2))
        per_frame = two["input_ids"].shape[1] - one["input_ids"].shape[1]
        fixed = one["input_ids"].shape[1] - per_frame
        return max(1, min(cap, (limit - max_new_tokens - fixed) // per_frame))


def main(args) -> int:
    try:
        methods, sampling, capture = check_bench_args(args)
        target_dir, draft_dir, device = checkpoint_pair(args)
    except ToolError as err:
        print(f"specvlm bench: error: {err}", file=sys.stderr)
        return 2
    prompts = args.prompts or (2 if args.quick else 4)
    max_new = args.max_new_tokens or (24 if args.quick else 48)
    seed = args.seed or 0
    workload = CheckpointWorkload(target_dir, draft_dir, device, args.prompt)
    points = sweep_points(args.quick, longest=workload.max_frames(max_new))
    with torch.no_grad():  # warm-up outside the timings (auto: its policy's calibration)
        warm = workload.inputs(8, 0)
        warm_methods = ("autoregressive", "specvlm") + ("auto",) * ("auto" in methods)
        compare(
            workload.target, workload.draft, warm, warm_methods, max_new_tokens=4, capture=capture
        )
    mode = describe_sampling(sampling, seed)
    print(
        f"specvlm bench: {len(points)} sweep points x {prompts} clips, methods "
        f"{', '.join(methods)}, up to {max_new} new tokens, {mode}, {args.repeats} repeats, "
        f"capture {args.capture}",
        file=sys.stderr,
    )
    with (
        logging_redirect_tqdm([logging.getLogger("transformers")]),
        tqdm(total=len(points) * prompts, desc="specvlm bench", unit="clip") as bar,
    ):
        results = run_sweeps(
            workload,
            points,
            methods=methods,
            prompts=prompts,
            max_new_tokens=max_new,
            repeats=args.repeats,
            sampling=sampling,
            seed=seed,
            capture=capture,
            progress=bar.update,
        )
    print(summary_table(results))
    print(
        f"({hardware(device)}; {prompts} held-out clip{'s' * (prompts > 1)} per point, times "
        f"summed over them, each the fastest of {args.repeats} run{'s' * (args.repeats > 1)}; "
        f"speedups per token vs autoregressive (decode, e2e) and vs autoregressive_compiled "
        f"(decode/c, e2e/c); {mode})"
    )
    broken = [r for r in results if r["identical"] is False]
    if sampling:
        print(
            "sampling: every output is a sample of the target's distribution; outputs are not "
            "compared with the target's own sample"
        )
    try:
        meta = {"hardware": hardware(device), "mode": mode, "command": shlex.join(sys.argv)}
        paths = write_results(results, args.out, meta)
    except OSError as err:
        print(f"specvlm bench: error: writing the results failed: {err}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(paths))
    if broken:
        print(f"NOT IDENTICAL: {sorted({r['method'] for r in broken})}", file=sys.stderr)
        return 1
    return 0
