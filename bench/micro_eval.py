"""The embedded micro pair on held-out clips: accuracy (from the training reports), tau of every
selector at one budget, and CPU speedups per tree size. Prints the tables of docs/micro.md.

    PYTHONPATH=. python bench/micro_eval.py [--clips 12] [--drop-rate 0.9] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

from specvlm.bench_e2e import tree_of_size
from specvlm.demo import EMBEDDED
from specvlm.e2e import compare
from specvlm.micro.clips import make_example
from specvlm.micro.data import EVAL_SEED_BASE
from specvlm.video_inputs import VideoPrompter

QUESTIONS = ("caption", "colour", "count", "motion")
TYPES = ("all", "count", "colour", "shape", "exists", "caption", "motion", "appear", "disappear")


def accuracy_table() -> str:
    lines = ["| model | params | " + " | ".join(TYPES) + " | video-blind (noise) |",
             "|---" * 12 + "|"]  # fmt: skip
    for name in ("target", "draft"):
        with open(os.path.join(EMBEDDED, name, "train_report.json")) as f:
            rep = json.load(f)
        acc, noise = rep["eval"]["video"], rep["eval"]["noise"]
        cells = [f"{acc[k]:.2f}" for k in TYPES]
        lines.append(f"| {name} | {rep['params']['total'] / 1e6:.2f}M | " + " | ".join(cells)
                     + f" | {noise['all']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--drop-rate", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("SPECVLM_KERNELS_BACKEND", "reference")
    from transformers import AutoModelForImageTextToText

    target = AutoModelForImageTextToText.from_pretrained(EMBEDDED / "target").eval()
    draft = AutoModelForImageTextToText.from_pretrained(EMBEDDED / "draft").eval()
    prompter = VideoPrompter(str(EMBEDDED / "target"), target.config)
    examples = []
    for i in range(args.clips):
        video, question, _ = make_example(EVAL_SEED_BASE + 500 + i, QUESTIONS[i % len(QUESTIONS)])
        examples.append(prompter(video, question))

    print("## Accuracy on held-out clips (training reports)\n")
    print(accuracy_table())

    print(f"\n## Selectors at drop rate {args.drop_rate} (default tree, {args.clips} clips)\n")
    methods = ("autoregressive", "naive_sd", "specvlm", "attention", "uniform", "random")
    runs = [compare(target, draft, x, methods, max_new_tokens=args.max_new_tokens,
                    drop_rate=args.drop_rate) for x in examples]  # fmt: skip
    print("| method | tau | decode speedup | end-to-end speedup | identical |")
    print("|---|---|---|---|---|")
    for j, method in enumerate(methods):
        recs = [r[j] for r in runs]
        taus = [r["mean_accepted_length"] for r in recs if r["mean_accepted_length"]]
        dec = sum(r[0]["decode_s"] for r in runs) / sum(r["decode_s"] for r in recs)
        e2e = sum(r[0]["e2e_s"] for r in runs) / sum(r["e2e_s"] for r in recs)
        tau = f"{statistics.mean(taus):.2f}" if taus else "-"
        ident = all(r["identical"] for r in recs)
        print(f"| {method} | {tau} | {dec:.2f}x | {e2e:.2f}x | {ident} |")

    for title, gen, new in (
        ("answers as generated (stop at EOS)", None, args.max_new_tokens),
        ("steady state: EOS ignored, 48 tokens (the answers above are 1-12 tokens long)",
         {"eos_token_id": None}, 48),
    ):  # fmt: skip
        tree_table(target, draft, examples, args.drop_rate, title, gen, new)


def tree_table(target, draft, examples, drop_rate, title, gen, new) -> None:
    print(f"\n## Tree size (two_stage, drop rate {drop_rate}): {title}\n")
    print("| tree nodes | tau | decode speedup | end-to-end speedup | identical |")
    print("|---|---|---|---|---|")
    for size in (1, 3, 6, 12, 24, 48):
        runs = [compare(target, draft, x, ("autoregressive", "specvlm"), max_new_tokens=new,
                        drop_rate=drop_rate, tree=tree_of_size(size),
                        generate_kwargs=gen) for x in examples]  # fmt: skip
        taus = [r[1]["mean_accepted_length"] for r in runs if r[1]["mean_accepted_length"]]
        dec = sum(r[0]["decode_s"] for r in runs) / sum(r[1]["decode_s"] for r in runs)
        e2e = sum(r[0]["e2e_s"] for r in runs) / sum(r[1]["e2e_s"] for r in runs)
        ident = all(r[1]["identical"] for r in runs)
        tau = f"{statistics.mean(taus):.2f}" if taus else "-"
        print(f"| {size} | {tau} | {dec:.2f}x | {e2e:.2f}x | {ident} |")


if __name__ == "__main__":
    main()
