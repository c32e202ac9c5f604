"""The embedded micro pair on held-out clips: accuracy (from the training reports), tau of every
selector at one budget, and CPU speedups per draft chain depth. Prints the tables of
docs/micro.md.

    PYTHONPATH=. python bench/micro_eval.py [--clips 48] [--drop-rate 0.9] [--max-new-tokens 40]

Selectors are compared on captions ("describe the video ."), the question whose answer needs the
most of the video; every clip is run with every selector, so differences are paired (mean and
standard error of the per-clip difference). ``random`` is a fixed random subset per seed, and
different subsets differ a lot, so its tau is the mean over ``--random-seeds`` seeds.
Speedups: the target's own greedy ``generate`` and SpecVLM run one after the other on each
clip; the ratio of summed decode (or end-to-end) times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics

import torch

import specvlm
from specvlm.demo import EMBEDDED
from specvlm.measure import timed
from specvlm.micro.clips import QUESTION_TYPES, make_example
from specvlm.micro.data import EVAL_SEED_BASE
from specvlm.trees import chain
from specvlm.video_inputs import VideoPrompter

TYPES = ("all",) + QUESTION_TYPES
SELECTORS = ("two_stage", "attention", "uniform", "random")


def accuracy_table() -> str:
    lines = ["| model | params | layers | " + " | ".join(TYPES) + " | video-blind (noise) |",
             "|---" * 13 + "|"]  # fmt: skip
    for name in ("target", "draft"):
        with open(os.path.join(EMBEDDED, name, "train_report.json")) as f:
            rep = json.load(f)
        acc, noise = rep["eval"]["video"], rep["eval"]["noise"]
        layers = rep["config"]["text"].get("num_hidden_layers", "?")
        cells = [f"{acc[k]:.2f}" for k in TYPES]
        lines.append(f"| {name} | {rep['params']['total'] / 1e6:.2f}M | {layers} | "
                     + " | ".join(cells) + f" | {noise['all']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def _mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{statistics.mean(values):.2f}"
    se = statistics.stdev(values) / math.sqrt(len(values))
    return f"{statistics.mean(values):.2f} ± {se:.2f}"


def selector_table(target, draft, inputs, refs, drop_rate, new, random_seeds, tree) -> str:
    def taus(selector, rate, seed=0):
        sd = specvlm.accelerate((target, draft), drop_rate=rate, selector=selector, seed=seed,
                                tree=tree)  # fmt: skip
        out = []
        for x, ref in zip(inputs, refs, strict=True):
            got = sd.generate(**x, max_new_tokens=new)
            if got.tolist() != ref.tolist():
                raise AssertionError("speculative output differs from the target's greedy output")
            out.append(sd.last_stats.mean_accepted_length)
        return out, sd.last_stats.kept_video_tokens

    rows = {}
    for sel in SELECTORS:
        if sel == "random":
            runs = [taus(sel, drop_rate, seed) for seed in range(random_seeds)]
            per_clip = zip(*(r[0] for r in runs), strict=True)
            rows[sel] = ([statistics.mean(c) for c in per_clip], runs[0][1])
        else:
            rows[sel] = taus(sel, drop_rate)
    rows["all video tokens (drop 0)"] = taus("two_stage", 0.0)
    rows["one video token"] = taus("uniform", 1.0 - 1.5 / 128)
    base = rows["two_stage"][0]
    lines = ["| selector | kept video tokens | tau (mean ± s.e.) | minus two_stage (paired) |",
             "|---|---|---|---|"]  # fmt: skip
    for name, (values, kept) in rows.items():
        diff = [a - b for a, b in zip(values, base, strict=True)]
        cell = "-" if name == "two_stage" else _mean_se(diff)
        label = f"random (mean of {random_seeds} seeds)" if name == "random" else name
        lines.append(f"| {label} | {kept} | {_mean_se(values)} | {cell} |")
    return "\n".join(lines)


def speed_table(target, draft, inputs, drop_rate, new, depths) -> str:
    lines = ["| draft chain depth | tau | mean depth drafted | decode speedup | "
             "end-to-end speedup | identical |", "|---|---|---|---|---|---|"]  # fmt: skip
    gen = dict(max_new_tokens=new)
    for depth in depths:
        sd = specvlm.accelerate((target, draft), drop_rate=drop_rate, tree=chain(depth))
        ref_dec = ref_e2e = sd_dec = sd_e2e = 0.0
        tau, drafted, same = [], [], True
        for x in inputs:
            ref, rt = timed(lambda s, x=x: target.generate(**x, do_sample=False, streamer=s,
                                                           **gen))  # fmt: skip
            out, st = timed(lambda s, x=x, sd=sd: sd.generate(**x, streamer=s, **gen))
            same &= out.tolist() == ref.tolist()
            ref_dec, ref_e2e = ref_dec + rt.decode_s, ref_e2e + rt.e2e_s
            sd_dec, sd_e2e = sd_dec + st.decode_s, sd_e2e + st.e2e_s
            tau.append(sd.last_stats.mean_accepted_length)
            drafted += sd.last_stats.drafted_depths
        lines.append(f"| {depth} | {statistics.mean(tau):.2f} | {statistics.mean(drafted):.2f} | "
                     f"{ref_dec / sd_dec:.2f}x | {ref_e2e / sd_e2e:.2f}x | {same} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--drop-rate", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--random-seeds", type=int, default=4)
    parser.add_argument("--depths", default="1,2,3,4,6,8")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("SPECVLM_KERNELS_BACKEND", "reference")
    from transformers import AutoModelForImageTextToText

    target = AutoModelForImageTextToText.from_pretrained(EMBEDDED / "target").eval()
    draft = AutoModelForImageTextToText.from_pretrained(EMBEDDED / "draft").eval()
    prompter = VideoPrompter(str(EMBEDDED / "target"), target.config)
    seeds = [EVAL_SEED_BASE + 500 + i for i in range(args.clips)]
    captions = [prompter(*make_example(s, "caption")[:2]) for s in seeds]
    mixed = [prompter(*make_example(s, QUESTION_TYPES[i % len(QUESTION_TYPES)])[:2])
             for i, s in enumerate(seeds)]  # fmt: skip
    depths = [int(d) for d in args.depths.split(",")]
    new = args.max_new_tokens

    print("## Accuracy on held-out clips (training reports)\n")
    print(accuracy_table())
    with torch.no_grad():
        for x in captions[:2]:  # warm-up
            target.generate(**x, do_sample=False, max_new_tokens=new)
        refs = [target.generate(**x, do_sample=False, max_new_tokens=new) for x in captions]
        print(f"\n## Selectors at drop rate {args.drop_rate}: captions of {args.clips} held-out "
              "clips, draft chain of 6\n")  # fmt: skip
        print(selector_table(target, draft, captions, refs, args.drop_rate, new,
                             args.random_seeds, chain(6)))  # fmt: skip
        for title, inputs in (("captions", captions), ("all question types", mixed)):
            print(f"\n## CPU speed by draft chain depth (two_stage, drop rate {args.drop_rate}): "
                  f"{title}, {args.clips} held-out clips\n")  # fmt: skip
            print(speed_table(target, draft, inputs, args.drop_rate, new, depths))


if __name__ == "__main__":
    main()
