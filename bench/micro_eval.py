"""The embedded micro pair on held-out clips: accuracy (from the training reports), tau of every
selector at one budget, and CPU speedups per draft chain depth. Prints the tables of
docs/micro.md.

    PYTHONPATH=. python bench/micro_eval.py [--clips 48] [--drop-rate 0.9] [--max-new-tokens 40]
        [--pair DIR] [--tables selectors,attention,...]

``--pair`` evaluates another pair (DIR/target, DIR/draft, e.g. a training run's output);
``--tables`` prints only some of the tables.

Selectors are compared on captions ("describe the video ."), the question whose answer needs the
most of the video; every clip is run with every selector, so differences are paired (mean and
standard error of the per-clip difference). ``random`` is a fixed random subset per seed, and
different subsets differ a lot, so its tau is the mean over ``--random-seeds`` seeds.
Speedups: the target's own greedy ``generate`` and SpecVLM run alternately ``--repeats`` times on
each clip and the fastest run of each counts; the ratio of summed decode (or end-to-end) times.
Two object oracles bound what any selector could do on this task: they know where the shapes
are (from the clip's facts) and keep the tokens the objects cover most, or the best token of each
object in turn. A control keeps random tokens that no shape touches: if it does as well as the
rest, every token carries more than its own pixels.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path

import numpy as np
import torch

import specvlm
from specvlm.micro.clips import QUESTION_TYPES, make_clip, make_example, token_coverage
from specvlm.micro.data import EVAL_SEED_BASE
from specvlm.tools.common import EMBEDDED
from specvlm.tools.timing import time_alternately
from specvlm.tools.video_input import VideoPrompter
from specvlm.trees import chain, tree_of_size

TYPES = ("all",) + QUESTION_TYPES
SELECTORS = ("two_stage", "attention", "uniform", "random")
TABLES = ("accuracy", "selectors", "reader", "attention", "methods", "speed", "sampling")


def accuracy_table(pair) -> str:
    lines = [
        "| model | params | layers | " + " | ".join(TYPES) + " | video-blind (noise) |",
        "|---" * 13 + "|",
    ]
    for name in ("target", "draft"):
        with open(os.path.join(pair, name, "train_report.json")) as f:
            rep = json.load(f)
        acc, noise = rep["eval"]["video"], rep["eval"]["noise"]
        layers = rep["config"]["text"].get("num_hidden_layers", "?")
        cells = [f"{acc[k]:.2f}" for k in TYPES]
        lines.append(
            f"| {name} | {rep['params']['total'] / 1e6:.2f}M | {layers} | "
            + " | ".join(cells)
            + f" | {noise['all']:.2f} |"
        )
    return "\n".join(lines)


def _mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{statistics.mean(values):.2f}"
    se = statistics.stdev(values) / math.sqrt(len(values))
    return f"{statistics.mean(values):.2f} ± {se:.2f}"


def object_oracles(coverage: np.ndarray) -> dict:
    """Selectors that know where the shapes are (``coverage``: token_coverage of one clip):
    the tokens the objects cover most, and each object's best token per frame, objects in
    turn (then the rest of the most covered)."""
    total = torch.tensor(coverage.sum(0))

    def most_covered(scores, keep, grid):
        return torch.sort(total, descending=True, stable=True).indices[:keep]

    def each_object(scores, keep, grid):
        frames = grid[0]
        queues = []
        for cov in torch.tensor(coverage):
            per_frame = cov.view(frames, -1)
            best = [
                (float(per_frame[t].max()), t * per_frame.shape[1] + int(per_frame[t].argmax()))
                for t in range(frames)
                if per_frame[t].max() > 0
            ]
            queues.append([i for _, i in sorted(best, reverse=True)])
        queues.append(most_covered(scores, scores.numel(), grid).tolist())
        chosen: list[int] = []
        while len(chosen) < keep:
            for queue in queues:
                while queue and queue[0] in chosen:
                    queue.pop(0)
                if queue and len(chosen) < keep:
                    chosen.append(queue.pop(0))
        return torch.tensor(chosen)

    return {
        "object oracle: most covered tokens": most_covered,
        "object oracle: each object in turn": each_object,
    }


def without_object_pixels(coverage: np.ndarray, seed: int):
    """A control: random tokens that hold no object pixel (the least covered ones when too few
    are empty). If it does as well as the others, each token carries more than its pixels."""
    total = torch.tensor(coverage.sum(0))

    def select(scores, keep, grid):
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(total.numel(), generator=g)
        order = order[torch.sort(total[order], stable=True).indices]  # empty first, random
        return order[:keep]

    return select


def attention_table(pair, inputs, coverages, keep: int) -> str:
    """Per layer of the target (eager attention, the scores' definition): the share of the
    text-to-video attention that lands on tokens an object covers (>= 15% of their pixels),
    and the share of object tokens among the ``keep`` highest-scored."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(
        pair / "target", attn_implementation="eager"
    ).eval()
    video_id = model.config.video_token_index
    per_layer: list[list[tuple[float, float]]] = []
    token_share, top_mass = [], []
    for x, cov in zip(inputs, coverages, strict=True):
        with torch.no_grad():
            attentions = model(**x, output_attentions=True).attentions
        where = (x["input_ids"][0] == video_id).nonzero()[:, 0]
        start, end = int(where[0]), int(where[-1]) + 1
        is_object = torch.tensor(cov.sum(0) >= 0.15)
        nv = is_object.numel()  # grid tokens (a trailing newline token is not scored)
        token_share.append(float(is_object.float().mean()))
        rows = []
        layers = [a[0, :, end:, start:end].mean(dim=(0, 1))[:nv] for a in attentions]
        score = torch.stack(layers).mean(0)
        top_mass.append(float(score.topk(keep).values.sum() / score.sum()))
        for scores in [*layers, score]:
            top = scores.topk(keep).indices
            rows.append(
                (
                    float(scores[is_object].sum() / scores.sum()),
                    float(is_object[top].float().mean()),
                )
            )
        per_layer.append(rows)
    lines = [
        f"Object tokens are {statistics.mean(token_share):.0%} of the video tokens; the "
        f"{keep} highest scores hold {statistics.mean(top_mass):.0%} of the score mass "
        f"(max {max(top_mass):.0%}).\n",
        f"| layer | attention mass on object tokens | object tokens among the top {keep} |",
        "|---|---|---|",
    ]
    for i, cells in enumerate(zip(*per_layer, strict=True)):
        label = "mean of layers (the score)" if i == len(per_layer[0]) - 1 else str(i)
        mass, top = statistics.mean(c[0] for c in cells), statistics.mean(c[1] for c in cells)
        lines.append(f"| {label} | {mass:.2f} | {top:.2f} |")
    return "\n".join(lines)


def selector_table(
    target, draft, inputs, refs, coverages, drop_rate, new, random_seeds, tree
) -> str:
    def taus(selector, rate, seed=0):
        """``selector``: a name, or a function of the clip index returning a selector."""
        out = []
        for i, (x, ref) in enumerate(zip(inputs, refs, strict=True)):
            chosen = selector if isinstance(selector, str) else selector(i)
            sd = specvlm.accelerate(
                (target, draft), drop_rate=rate, tree=tree, seed=seed, selector=chosen
            )
            got = sd.generate(**x, max_new_tokens=new)
            if got.tolist() != ref.tolist():
                raise AssertionError("speculative output differs from the target's greedy output")
            out.append(sd.last_stats.mean_accepted_length)
        return out, sd.last_stats.kept_video_tokens

    def mean_over_seeds(run):
        """``run(seed)`` -> (taus, kept) for each seed; per clip, the mean over the seeds."""
        runs = [run(seed) for seed in range(random_seeds)]
        per_clip = zip(*(r[0] for r in runs), strict=True)
        return [statistics.mean(c) for c in per_clip], runs[0][1]

    rows = {}
    for sel in SELECTORS:
        if sel == "random":
            rows[sel] = mean_over_seeds(lambda seed: taus("random", drop_rate, seed))
        else:
            rows[sel] = taus(sel, drop_rate)
    for name in object_oracles(coverages[0]):
        rows[name] = taus(lambda i, name=name: object_oracles(coverages[i])[name], drop_rate)
    rows[f"random tokens without object pixels (mean of {random_seeds} seeds)"] = mean_over_seeds(
        lambda seed: taus(lambda i: without_object_pixels(coverages[i], seed), drop_rate)
    )
    rows["all video tokens (drop 0)"] = taus("two_stage", 0.0)
    rows["one video token"] = taus("uniform", 1.0 - 1.5 / 128)
    base = rows["two_stage"][0]
    lines = [
        "| selector | kept video tokens | tau (mean ± s.e.) | minus two_stage (paired) |",
        "|---|---|---|---|",
    ]
    for name, (values, kept) in rows.items():
        diff = [a - b for a, b in zip(values, base, strict=True)]
        cell = "-" if name == "two_stage" else _mean_se(diff)
        label = f"random (mean of {random_seeds} seeds)" if name == "random" else name
        lines.append(f"| {label} | {kept} | {_mean_se(values)} | {cell} |")
    return "\n".join(lines)


def method_table(target, draft, inputs, drop_rate, new, repeats) -> str:
    """The target alone, transformers' assisted generation (the draft on the full video, its own
    adaptive chain) and SpecVLM (chain of 4, the demo's CPU default), alternating per clip."""
    sd = specvlm.accelerate((target, draft), drop_rate=drop_rate, tree=chain(4))
    gen = dict(max_new_tokens=new, do_sample=False)
    methods = {
        "target alone (`generate`)": lambda x, s: target.generate(**x, streamer=s, **gen),
        "assisted generation (`assistant_model=draft`)": lambda x, s: target.generate(
            **x, assistant_model=draft, streamer=s, **gen
        ),
        "SpecVLM (chain of 4, two_stage)": lambda x, s: sd.generate(**x, streamer=s, **gen),
    }
    sums = {name: [0.0, 0.0, 0.0] for name in methods}
    for x in inputs:
        timings = time_alternately(
            {name: (lambda s, run=run, x=x: run(x, s)) for name, run in methods.items()}, repeats
        )
        want = timings["target alone (`generate`)"][0][0].tolist()
        for name, (outs, best) in timings.items():
            if any(out.tolist() != want for out in outs):
                raise AssertionError(f"{name}: output differs from the target's greedy output")
            for i, v in enumerate((best.decode_s, best.e2e_s, best.ttft_s)):
                sums[name][i] += v
    ref = sums["target alone (`generate`)"]
    lines = [
        "| method | decode speedup | end-to-end speedup | time to first token (ms/clip) |",
        "|---|---|---|---|",
    ]
    for name, (dec, e2e, ttft) in sums.items():
        lines.append(
            f"| {name} | {ref[0] / dec:.2f}x | {ref[1] / e2e:.2f}x | "
            f"{1000 * ttft / len(inputs):.0f} |"
        )
    return "\n".join(lines)


def speed_table(target, draft, inputs, drop_rate, new, depths, repeats) -> str:
    lines = [
        "| draft chain depth | tau | mean depth drafted | decode speedup | "
        "end-to-end speedup | time to first token (ratio) | draft prefill share of "
        "SpecVLM's e2e | identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    gen = dict(max_new_tokens=new)
    for depth in depths:
        sd = specvlm.accelerate((target, draft), drop_rate=drop_rate, tree=chain(depth))
        ref_sum, sd_sum = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        tau, drafted, same, draft_prefill = [], [], True, 0.0
        for x in inputs:
            timings = time_alternately(
                {
                    "ref": lambda s, x=x: target.generate(**x, do_sample=False, streamer=s, **gen),
                    "sd": lambda s, x=x, sd=sd: sd.generate(**x, streamer=s, **gen),
                },
                repeats,
            )
            (ref_outs, ref_best), (sd_outs, sd_best) = timings["ref"], timings["sd"]
            same &= all(o.tolist() == ref_outs[0].tolist() for o in ref_outs + sd_outs)
            for total, best in ((ref_sum, ref_best), (sd_sum, sd_best)):
                for i, v in enumerate((best.decode_s, best.e2e_s, best.ttft_s)):
                    total[i] += v
            tau.append(sd.last_stats.mean_accepted_length)
            drafted += sd.last_stats.drafted_depths
            draft_prefill += sd.last_stats.draft_prefill
        lines.append(
            f"| {depth} | {statistics.mean(tau):.2f} | {statistics.mean(drafted):.2f} | "
            f"{ref_sum[0] / sd_sum[0]:.2f}x | {ref_sum[1] / sd_sum[1]:.2f}x | "
            f"{sd_sum[2] / ref_sum[2]:.2f} | {draft_prefill / sd_sum[1]:.0%} | "
            f"{same} |"
        )
    return "\n".join(lines)


def sampling_table(target, draft, inputs, drop_rate, new, repeats, trees) -> str:
    """tau and decode speedup when sampling, against the target's own ``generate`` with the same
    options: temperatures 0.7 and 1.0, both ways of drafting children (the draft's top-k, or
    drawn without replacement from its distribution), next to greedy. Every run is seeded."""
    lines = [
        "| tree | decoding | children | tau | tau / greedy tau | decode speedup |",
        "|---|---|---|---|---|---|",
    ]
    settings = [("greedy", None, "top_k")] + [
        (f"T={t}", t, c) for t in (0.7, 1.0) for c in ("top_k", "sampled")
    ]
    for tree_name, tree in trees.items():
        greedy_tau = None
        for name, temperature, children in settings:
            gen = dict(max_new_tokens=new, do_sample=temperature is not None)
            if temperature is not None:
                gen["temperature"] = temperature
            sd = specvlm.accelerate(
                (target, draft), drop_rate=drop_rate, tree=tree, children=children
            )
            taus, ref_decode, sd_decode = [], 0.0, 0.0
            for i, x in enumerate(inputs):
                rng = torch.Generator().manual_seed(i)

                def run_target(s, x=x, i=i, gen=gen):
                    torch.manual_seed(i)
                    return target.generate(**x, streamer=s, **gen)

                def run_sd(s, x=x, sd=sd, rng=rng, gen=gen):
                    return sd.generate(**x, streamer=s, generator=rng, **gen)

                timings = time_alternately({"ref": run_target, "sd": run_sd}, repeats)
                ref_decode += timings["ref"][1].decode_s
                sd_decode += timings["sd"][1].decode_s
                taus.append(sd.last_stats.mean_accepted_length)
            tau = statistics.mean(taus)
            greedy_tau = tau if greedy_tau is None else greedy_tau
            lines.append(
                f"| {tree_name} | {name} | {children if temperature else '-'} | {tau:.2f} | "
                f"{tau / greedy_tau:.0%} | {ref_decode / sd_decode:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--drop-rate", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--random-seeds", type=int, default=4)
    parser.add_argument("--depths", default="1,2,3,4,6,8")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per clip and method")
    parser.add_argument("--pair", default=str(EMBEDDED), help="DIR with target/ and draft/")
    parser.add_argument(
        "--tables", default=",".join(TABLES), help="comma-separated subset of " + ",".join(TABLES)
    )
    args = parser.parse_args()
    tables = set(args.tables.split(","))
    if not tables <= set(TABLES):
        parser.error(f"--tables: choose from {','.join(TABLES)}")
    pair = Path(args.pair)
    torch.set_num_threads(1)
    os.environ.setdefault("SPECVLM_KERNELS_BACKEND", "reference")
    from transformers import AutoModelForImageTextToText

    target = AutoModelForImageTextToText.from_pretrained(pair / "target").eval()
    draft = AutoModelForImageTextToText.from_pretrained(pair / "draft").eval()
    prompter = VideoPrompter(str(pair / "target"), target.config)
    seeds = [EVAL_SEED_BASE + 500 + i for i in range(args.clips)]
    captions = [prompter(*make_example(s, "caption")[:2]) for s in seeds]
    coverages = [token_coverage(make_clip(s)[1], (4, 4)) for s in seeds]
    mixed = [
        prompter(*make_example(s, QUESTION_TYPES[i % len(QUESTION_TYPES)])[:2])
        for i, s in enumerate(seeds)
    ]
    depths = [int(d) for d in args.depths.split(",")]
    new = args.max_new_tokens

    if "accuracy" in tables:
        print("## Accuracy on held-out clips (training reports)\n")
        print(accuracy_table(pair))
    with torch.no_grad():
        for x in captions[:2]:  # warm-up
            target.generate(**x, do_sample=False, max_new_tokens=new)
        refs = [target.generate(**x, do_sample=False, max_new_tokens=new) for x in captions]
        if "selectors" in tables:
            print(
                f"\n## Selectors at drop rate {args.drop_rate}: captions of {args.clips} "
                "held-out clips, draft chain of 6\n"
            )
            print(
                selector_table(
                    target,
                    draft,
                    captions,
                    refs,
                    coverages,
                    args.drop_rate,
                    new,
                    args.random_seeds,
                    chain(6),
                )
            )
        if "reader" in tables:
            print(
                f"\n## Selectors with the target as its own draft (a reader that can use every "
                f"token it gets), drop rate {args.drop_rate}, same clips\n"
            )
            reader = AutoModelForImageTextToText.from_pretrained(pair / "target").eval()
            print(
                selector_table(
                    target,
                    reader,
                    captions,
                    refs,
                    coverages,
                    args.drop_rate,
                    new,
                    args.random_seeds,
                    chain(6),
                )
            )
        if "attention" in tables:
            keep = int(128 * (1 - args.drop_rate))
            print(
                f"\n## Where the target's attention goes: captions of {args.clips} held-out clips\n"
            )
            print(attention_table(pair, captions, coverages, keep))
        if "methods" in tables:
            print(
                f"\n## Methods on captions of {args.clips} held-out clips (drop rate "
                f"{args.drop_rate}, fastest of {args.repeats} alternating runs)\n"
            )
            print(method_table(target, draft, captions, args.drop_rate, new, args.repeats))
        if "sampling" in tables:
            print(
                f"\n## Sampling: captions of {args.clips} held-out clips, drop rate "
                f"{args.drop_rate}, fastest of {args.repeats} alternating runs\n"
            )
            trees = {"chain of 4": chain(4), "8 nodes": tree_of_size(8)}
            print(sampling_table(target, draft, captions, args.drop_rate, new, args.repeats, trees))
        if "speed" in tables:
            for title, inputs in (("captions", captions), ("all question types", mixed)):
                print(
                    f"\n## CPU speed by draft chain depth (two_stage, drop rate "
                    f"{args.drop_rate}): {title}, {args.clips} held-out clips\n"
                )
                print(speed_table(target, draft, inputs, args.drop_rate, new, depths, args.repeats))


if __name__ == "__main__":
    main()
