"""``specvlm bench``: every method on the same inputs, over sweeps of drop rate, frames and tree
size; results as JSON, CSV and plots.

A *workload* provides the models and inputs: ``workload.target``, ``workload.draft`` and
``workload.inputs(frames, seed) -> dict`` (processor outputs for one prompt). Each sweep point
runs every method on ``prompts`` inputs (seeds ``0 .. prompts-1``) and sums times and tokens
over them; tau is the mean over prompts. The ``random`` ablation draws its own subset for each
input (its seed is the input's), not one set of positions for all of them.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm

from specvlm.micro.data import held_out_clip
from specvlm.tools.common import METHODS, ToolError, checkpoint_pair, inputs_to, load_pair, speedup
from specvlm.tools.comparison import compare
from specvlm.tools.video_input import VideoPrompter
from specvlm.trees import tree_of_size

FIELDS = (
    "method",
    "mean_accepted_length",
    "new_tokens",
    "decode_s",
    "decode_tokens_per_s",
    "e2e_s",
    "ttft_s",
    "peak_memory_bytes",
    "decode_speedup",
    "e2e_speedup",
    "identical",
    "drop_rate",
    "frames",
    "video_tokens",
    "tree_size",
    "sweep",
    "error",
)


@dataclass
class SweepPoint:
    sweep: str  # "drop_rate" | "frames" | "tree_size"
    drop_rate: float
    frames: int
    tree_size: int


def sweep_points(
    quick: bool, *, drop_rates=None, frames=None, tree_sizes=None, base_frames: int = 8
) -> list[SweepPoint]:
    drop_rates = drop_rates or ((0.5, 0.9) if quick else (0.5, 0.75, 0.9, 0.95))
    frames = frames or ((4, base_frames) if quick else (2, 4, base_frames, 2 * base_frames))
    tree_sizes = tree_sizes or ((8, 48) if quick else (1, 8, 24, 48, 64))
    points = [SweepPoint("drop_rate", d, base_frames, 48) for d in drop_rates]
    points += [SweepPoint("frames", 0.9, f, 48) for f in frames]
    points += [SweepPoint("tree_size", 0.9, base_frames, n) for n in tree_sizes]
    return points


def _merge(runs: list[list[dict]]) -> list[dict]:
    """Sum times/tokens of the same method over prompts; tau averaged; identical all-true."""
    merged = []
    for per_method in zip(*runs, strict=True):
        rec = dict(per_method[0])
        ok = [r for r in per_method if r["error"] is None]
        if len(ok) != len(per_method):
            rec["error"] = next(r["error"] for r in per_method if r["error"] is not None)
        for key in ("new_tokens", "decode_s", "e2e_s", "ttft_s"):
            vals = [r[key] for r in ok if r.get(key) is not None]
            rec[key] = sum(vals) if vals else None
        taus = [r["mean_accepted_length"] for r in ok if r["mean_accepted_length"] is not None]
        rec["mean_accepted_length"] = sum(taus) / len(taus) if taus else None
        peaks = [r["peak_memory_bytes"] for r in ok if r.get("peak_memory_bytes") is not None]
        rec["peak_memory_bytes"] = max(peaks) if peaks else None
        idents = [r["identical"] for r in per_method]
        rec["identical"] = None if any(i is None for i in idents) else all(idents)
        merged.append(rec)
    by_method = {r["method"]: r for r in merged}
    ref = by_method.get("autoregressive", {})
    for rec in merged:
        dec = rec.get("decode_s")
        tokens = rec.get("new_tokens") or 0
        rec["decode_tokens_per_s"] = (tokens - len(runs)) / dec if dec else None
        rec["decode_speedup"] = speedup(ref.get("decode_s"), dec)
        rec["e2e_speedup"] = speedup(ref.get("e2e_s"), rec.get("e2e_s"))
    return merged


def run_sweeps(
    workload,
    points: list[SweepPoint],
    *,
    methods=METHODS,
    prompts: int = 2,
    max_new_tokens: int = 32,
    repeats: int = 1,
    progress=None,
) -> list[dict]:
    results = []
    for point in points:
        runs = []
        for seed in range(prompts):
            inputs = workload.inputs(point.frames, seed)
            records = compare(
                workload.target,
                workload.draft,
                inputs,
                methods,
                max_new_tokens=max_new_tokens,
                drop_rate=point.drop_rate,
                tree=tree_of_size(point.tree_size),
                repeats=repeats,
                random_seed=seed,
                frames=point.frames,
                tree_size=point.tree_size,
                sweep=point.sweep,
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


def write_results(results: list[dict], out_dir: str) -> list[str]:
    """``results.json``, ``results.csv`` and the PNG plots; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "results.json"), os.path.join(out_dir, "results.csv")]
    with open(paths[0], "w") as f:
        json.dump(results, f, indent=1)
    with open(paths[1], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    paths += plot_results(results, out_dir)
    return paths


def plot_results(results: list[dict], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    frames = [r for r in results if r["sweep"] == "frames" and r["e2e_speedup"] is not None]
    if frames:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for method in sorted({r["method"] for r in frames}):
            pts = sorted((r["video_tokens"] or 0, r) for r in frames if r["method"] == method)
            xs = [p[0] for p in pts]
            axes[0].plot(xs, [p[1]["decode_speedup"] or 0 for p in pts], marker="o", label=method)
            axes[1].plot(xs, [p[1]["e2e_speedup"] or 0 for p in pts], marker="o", label=method)
        for ax, name in zip(axes, ("decode", "end-to-end"), strict=True):
            ax.set_xlabel("video tokens")
            ax.set_ylabel(f"{name} speedup vs target generate")
            ax.axhline(1.0, color="grey", linewidth=0.8)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, "speedup_vs_video_tokens.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    drops = [r for r in results if r["sweep"] == "drop_rate" and r["mean_accepted_length"]]
    if drops:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for method in sorted({r["method"] for r in drops}):
            pts = sorted(
                (r["drop_rate"], r["mean_accepted_length"]) for r in drops if r["method"] == method
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        ax.set_xlabel("drop rate")
        ax.set_ylabel("tau (tokens per verification)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, "tau_vs_drop_rate.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# -------------------------------------------------------------------------------------------
# `specvlm bench`
# -------------------------------------------------------------------------------------------
class CheckpointWorkload:
    """A target/draft checkpoint pair asked about generated held-out clips (one per seed)."""

    def __init__(self, target_dir: str, draft_dir: str, device, prompt: str):
        self.target, self.draft = load_pair(target_dir, draft_dir, device)
        self.prompter = VideoPrompter(target_dir, self.target.config)
        self.device, self.prompt = device, prompt

    def inputs(self, frames: int, seed: int) -> dict:
        video = held_out_clip(seed, frames=frames)
        return inputs_to(self.prompter(video, self.prompt), self.device)


def main(args) -> int:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    try:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ToolError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if args.repeats < 1:
            raise ToolError("--repeats must be >= 1")
        target_dir, draft_dir, device = checkpoint_pair(args)
    except ToolError as err:
        print(f"specvlm bench: error: {err}", file=sys.stderr)
        return 2
    prompts = args.prompts or (2 if args.quick else 4)
    max_new = args.max_new_tokens or (24 if args.quick else 48)
    points = sweep_points(args.quick)
    workload = CheckpointWorkload(target_dir, draft_dir, device, args.prompt)
    with torch.no_grad():  # warm-up outside the timings
        warm = workload.inputs(8, 0)
        compare(
            workload.target, workload.draft, warm, ("autoregressive", "specvlm"), max_new_tokens=4
        )
    with tqdm(total=len(points) * prompts, desc="specvlm bench", unit="run") as bar:
        results = run_sweeps(
            workload,
            points,
            methods=methods,
            prompts=prompts,
            max_new_tokens=max_new,
            repeats=args.repeats,
            progress=bar.update,
        )
    paths = write_results(results, args.out)
    broken = [r for r in results if r["identical"] is False]
    print("wrote " + ", ".join(paths))
    if broken:
        print(f"NOT IDENTICAL: {sorted({r['method'] for r in broken})}", file=sys.stderr)
        return 1
    return 0
