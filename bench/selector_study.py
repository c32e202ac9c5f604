"""The selector study: tau by selector x tree shape x video length on the embedded pair, over
held-out caption questions, greedy, with 95% bootstrap confidence intervals over clips. Every
output is checked against the target's ``generate``. Also, per selector and length, where the
kept tokens lie (the diagnostics of position bias).

    PYTHONPATH=. python bench/selector_study.py [--clips 24] [--frames 8,16,32,61]
        [--trees chain6,tree16,tree48] [--selectors two_stage,...] [--drop-rate 0.9]
        [--out docs/bench/selector_study.json]

``--selectors ""`` runs the automatic policy's rows alone (recorded with
``--out docs/bench/selector_policy.json``).

tau per clip is tokens per verification (bonus included); a row's tau is the mean over clips,
its interval the 2.5-97.5 percentiles of 2000 bootstrap means (clips resampled); ``vs random``
is the paired difference (the same clips resampled). The random selector draws a different set
per clip (``seed`` = the clip's number). Timings are not taken: tau does not depend on the
machine's load. The policy's rows (per length, ``AutoPolicy(drop_rates=(drop,),
speculate=True)`` with the default selector, and choosing between it and ``semantic``) are the
exception: the trees the policy picks follow the forward costs it measures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np
import torch

import specvlm
from specvlm.names import SELECTORS
from specvlm.tools.micro_bench import caption_prompts, embedded_pair_and_prompter, tree_by_name

RANKS = 4  # acceptance by draft rank reported for ranks 0..RANKS-1


def _padded(counts) -> np.ndarray:
    out = np.zeros(RANKS)
    head = np.asarray(counts[:RANKS], dtype=float)
    out[: head.size] = head
    return out


def bootstrap(values, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The mean of ``values`` and its 95% percentile bootstrap interval."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def coverage(kept: torch.Tensor, grid) -> dict:
    """Where the kept grid indices lie: the share of frames and of places (h, w) with at least
    one kept token, the normalised entropy of the per-frame counts (1: even over frames) and the
    mean frame position of the kept tokens (0: the first frame, 1: the last)."""
    t, h, w = grid
    frames = torch.bincount(kept // (h * w), minlength=t).float()
    places = torch.unique(kept % (h * w)).numel()
    p = frames / frames.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(t)) if t > 1 else 1.0
    return {
        "frames_covered": float((frames > 0).float().mean()),
        "places_covered": places / (h * w),
        "frame_entropy": entropy,
        "mean_frame": float((kept // (h * w)).float().mean() / max(t - 1, 1)),
    }


def run_clip(target, draft, inputs, expected, selector: str, tree, seed: int, args):
    sd = specvlm.accelerate(
        (target, draft), drop_rate=args.drop_rate, selector=selector, tree=tree, seed=seed
    )
    out = sd.generate(**inputs, do_sample=False, max_new_tokens=args.max_new_tokens)
    if not torch.equal(out, expected):
        raise AssertionError(f"an output differs from the target's ({selector}, clip {seed})")
    return sd.last_stats


def measure_length(target, draft, prompter, frames: int, args) -> list[dict]:
    prompts = caption_prompts(prompter, args.clips, frames)
    expected = [
        target.generate(**p, do_sample=False, max_new_tokens=args.max_new_tokens) for p in prompts
    ]
    taus: dict = {}
    rows = []
    for selector in args.selectors:
        cover = []
        for tree_name in args.trees:
            tree = tree_by_name(tree_name)
            per_clip, offers, hits = [], np.zeros(RANKS), np.zeros(RANKS)
            for n, (inputs, exp) in enumerate(zip(prompts, expected, strict=True)):
                stats = run_clip(target, draft, inputs, exp, selector, tree, n, args)
                per_clip.append(stats.mean_accepted_length)  # 0 where no step was taken
                grid = stats.video_grid
                offers += _padded(stats.rank_offers)
                hits += _padded(stats.rank_hits)
                if tree_name == args.trees[0]:
                    cover.append(coverage(stats.kept_indices, grid))
            taus[selector, tree_name] = per_clip
            mean, low, high = bootstrap(per_clip)
            rows.append(
                {
                    "frames": frames,
                    "video_tokens": int(grid[0] * grid[1] * grid[2]),
                    "selector": selector,
                    "tree": tree_name,
                    "tau": mean,
                    "tau_ci": [low, high],
                    "tau_per_clip": per_clip,
                    # at the nodes the target's walk reached: the share of the draft's rank-r
                    # children offered there that the target took
                    "acceptance_by_rank": [
                        float(h / o) if o else None for h, o in zip(hits, offers, strict=True)
                    ],
                    "coverage": {k: float(np.mean([c[k] for c in cover])) for k in cover[0]},
                }
            )
            print(
                f"frames {frames} {selector:>10} {tree_name:>7}: "
                f"tau {mean:.2f} [{low:.2f}, {high:.2f}]",
                flush=True,
            )
    rows += policy_rows(target, draft, prompts, expected, frames, args)
    for row in rows:
        base = taus.get(("random", row["tree"]))
        if base is not None:
            diff = np.asarray(row["tau_per_clip"]) - np.asarray(base)
            row["vs_random"] = list(bootstrap(diff))
    return rows


def _ranks(row: dict) -> str:
    return " / ".join("-" if a is None else f"{a:.2f}" for a in row["acceptance_by_rank"][:3])


def policy_rows(target, draft, prompts, expected, frames: int, args) -> list[dict]:
    """The automatic policy at the study's drop rate, choosing the tree, with the default
    selector and choosing between it and ``semantic`` (one decoder per row, learning over the
    clips in order, as a user's would): tau per clip and the selectors it chose."""
    rows = []
    for name, choices in (("policy", None), ("policy choosing", ("two_stage", "semantic"))):
        policy = specvlm.AutoPolicy(drop_rates=(args.drop_rate,), speculate=True, selectors=choices)
        sd = specvlm.accelerate((target, draft), policy=policy)
        per_clip, chosen = [], []
        for inputs, exp in zip(prompts, expected, strict=True):
            out = sd.generate(**inputs, do_sample=False, max_new_tokens=args.max_new_tokens)
            if not torch.equal(out, exp):
                raise AssertionError(f"an output differs from the target's ({name})")
            stats = sd.last_stats
            per_clip.append(stats.mean_accepted_length)
            chosen.append(stats.selector)
        mean, low, high = bootstrap(per_clip)
        grid = sd.last_stats.video_grid
        rows.append(
            {
                "frames": frames,
                "video_tokens": int(grid[0] * grid[1] * grid[2]),
                "selector": name,
                "tree": "policy's",
                "tau": mean,
                "tau_ci": [low, high],
                "tau_per_clip": per_clip,
                "selectors_chosen": {s: chosen.count(s) for s in sorted(set(chosen))},
            }
        )
        print(f"frames {frames} {name}: tau {mean:.2f} [{low:.2f}, {high:.2f}] {chosen}")
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| video tokens | tree | selector | tau [95% CI] | vs random [95% CI] "
        "| accepted: rank 0 / 1 / 2 | frames covered | frame entropy | mean frame |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "coverage" not in r:
            continue  # the policy's rows: printed as they run
        vs = r.get("vs_random")
        vs_text = f"{vs[0]:+.2f} [{vs[1]:+.2f}, {vs[2]:+.2f}]" if vs else "-"
        c = r["coverage"]
        lines.append(
            f"| {r['video_tokens']} | {r['tree']} | {r['selector']} | {r['tau']:.2f} "
            f"[{r['tau_ci'][0]:.2f}, {r['tau_ci'][1]:.2f}] | {vs_text} | {_ranks(r)} | "
            f"{c['frames_covered']:.2f} | {c['frame_entropy']:.2f} | {c['mean_frame']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--frames", default="8,16,32,61")
    parser.add_argument("--trees", default="chain6,tree16,tree48")
    parser.add_argument("--selectors", default=",".join(SELECTORS))
    parser.add_argument("--drop-rate", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", default="docs/bench/selector_study.json")
    args = parser.parse_args()
    args.trees = args.trees.split(",")
    args.selectors = [s for s in args.selectors.split(",") if s]  # "": the policy's rows only
    for name in args.trees:
        tree_by_name(name)
    unknown = [s for s in args.selectors if s not in SELECTORS]
    if unknown:
        raise SystemExit(f"unknown selectors {unknown}; choose from {', '.join(SELECTORS)}")
    torch.set_num_threads(1)
    target, draft, prompter = embedded_pair_and_prompter()
    started = time.time()
    rows = []
    with torch.no_grad():
        for frames in (int(f) for f in args.frames.split(",")):
            rows += measure_length(target, draft, prompter, frames, args)
    print(table(rows))
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 torch thread",
        "torch": torch.__version__,
        "clips": args.clips,
        "max_new_tokens": args.max_new_tokens,
        "drop_rate": args.drop_rate,
        "seconds": round(time.time() - started),
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
