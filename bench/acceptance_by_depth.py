"""Acceptance by depth on the embedded pair: does modelling it per depth predict tau better than
one set of rates by rank for every depth?

    PYTHONPATH=. python bench/acceptance_by_depth.py [--clips 24] [--frames 32] [--drop-rate 0.9]
        [--trees chain6,tree16,tree48] [--weights 1,4,16,64]
        [--out docs/bench/acceptance_by_depth.json]

Every clip is decoded with every tree of ``--trees`` (greedy, each output checked against the
target's ``generate``). For each pair of trees (learn, test), the first half of the clips decoded
with the learn tree give the counts (per rank, and per depth and rank), learned as the automatic
policy learns them (:class:`specvlm.policy.RankAcceptance`, every call weighted alike); tau of
the test tree is then predicted from the rates over all depths, and from the per-depth table at
each depth weight of ``--weights`` (the offers a depth's own counts need to outweigh the overall
rates; the policy's :data:`specvlm.policy.DEPTH_PRIOR_WEIGHT`), and measured on the second half
of the clips (tokens per verification, bonus included). Timings are not taken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

import specvlm
from specvlm.policy import DEPTH_PRIOR_WEIGHT, MAX_RANKS, PRIOR, RankAcceptance, tree_tau
from specvlm.tools.micro_bench import caption_prompts, embedded_pair_and_prompter, tree_by_name


def decode(target, draft, prompts, expected, tree, drop_rate: float, max_new_tokens: int) -> list:
    """Every prompt's stats with ``tree`` fixed; outputs checked against the target's."""
    sd = specvlm.accelerate((target, draft), drop_rate=drop_rate, tree=tree)
    out = []
    for inputs, ref in zip(prompts, expected, strict=True):
        got = sd.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        if not torch.equal(ref, got):
            raise AssertionError("an output differs from the target's")
        out.append(sd.last_stats)
    return out


def tau_of(stats: list) -> float:
    return sum(sum(s.accepted_lengths) for s in stats) / sum(len(s.accepted_lengths) for s in stats)


def predictions(learned: list, trees: dict, weights: list[float]) -> dict:
    """Per test tree: tau predicted from the learned calls' rates over all depths
    (``"overall"``) and per depth at each weight."""
    acc = RankAcceptance()
    for stats in learned:
        acc.add_call(stats, memory=1.0)
    overall = RankAcceptance(acc.offers, acc.hits).rates(PRIOR, MAX_RANKS)
    tables = {w: acc.rates(PRIOR, MAX_RANKS, depth_weight=w) for w in weights}
    out = {}
    for name, tree in trees.items():
        out[name] = {"overall": tree_tau(tree, overall)}
        out[name].update({f"depth_w{w:g}": tree_tau(tree, t) for w, t in tables.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--drop-rate", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--trees", default="chain6,tree16,tree48")
    parser.add_argument("--weights", default="1,4,16,64")
    parser.add_argument("--out", default="docs/bench/acceptance_by_depth.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    target, draft, prompter = embedded_pair_and_prompter()
    prompts = caption_prompts(prompter, args.clips, args.frames)
    trees = {name: tree_by_name(name) for name in args.trees.split(",")}
    weights = [float(w) for w in args.weights.split(",")]
    half = args.clips // 2
    with torch.no_grad():
        expected = [
            target.generate(**p, do_sample=False, max_new_tokens=args.max_new_tokens)
            for p in prompts
        ]
        stats = {
            name: decode(
                target, draft, prompts, expected, tree, args.drop_rate, args.max_new_tokens
            )
            for name, tree in trees.items()
        }
    measured = {name: tau_of(s[half:]) for name, s in stats.items()}
    rows = []
    for learn in trees:
        for test, predicted in predictions(stats[learn][:half], trees, weights).items():
            rows.append({"learn": learn, "test": test, "measured_tau": measured[test], **predicted})
    models = [k for k in rows[0] if k == "overall" or k.startswith("depth_w")]
    errors = {m: sum(abs(r[m] - r["measured_tau"]) for r in rows) / len(rows) for m in models}
    print("| learn | test | measured tau | " + " | ".join(models) + " |")
    print("|---" * (3 + len(models)) + "|")
    for r in rows:
        cells = " | ".join(f"{r[m]:.2f}" for m in models)
        print(f"| {r['learn']} | {r['test']} | {r['measured_tau']:.2f} | {cells} |")
    print("mean absolute error: " + ", ".join(f"{m} {e:.3f}" for m, e in errors.items()))
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 torch thread",
        "torch": torch.__version__,
        "clips": args.clips,
        "frames": args.frames,
        "drop_rate": args.drop_rate,
        "max_new_tokens": args.max_new_tokens,
        "policy_depth_weight": DEPTH_PRIOR_WEIGHT,
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows, "mean_abs_error": errors}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
