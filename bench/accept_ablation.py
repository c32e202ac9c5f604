"""Acceptance (tau) ablation on tiny random models: draft positions and selectors.

The draft is a copy of the target (same weights), so every rejected proposal is caused by the
pruning alone (and by the draft's positions): tau measures how much of the target's behaviour
survives with a share of the video dropped. Random tiny models are a proxy only; trained models
(the embedded pair) give the real numbers.

    PYTHONPATH=. python bench/accept_ablation.py [--seeds 8] [--new 24]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

os.environ.setdefault("SPECVLM_KERNELS_BACKEND", "reference")  # CPU: PyTorch references

import specvlm  # noqa: E402
from tests import tiny_models as tm  # noqa: E402


def mean_tau(family, drop_rate, selector, draft_positions, seeds, new):
    target, _ = tm.make_pair(family)
    draft = tm.make_copy_draft(target)
    sd = specvlm.accelerate(
        (target, draft), drop_rate=drop_rate, selector=selector, draft_positions=draft_positions
    )
    taus = []
    for seed in range(seeds):
        inputs = tm.make_inputs(family, target, seed=100 + seed, frames=4)
        ref = target.generate(**inputs, do_sample=False, max_new_tokens=new)
        out = sd.generate(**inputs, max_new_tokens=new)
        assert out.tolist() == ref.tolist()
        taus.append(sd.last_stats.mean_accepted_length)
    return statistics.mean(taus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--new", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"copy-draft tau, default tree (depth 6), {args.seeds} prompts x {args.new} tokens\n")
    print("| family | drop rate | selector | draft positions | tau |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for drop in (0.5, 0.75, 0.9):
            for mode in ("compact", "original"):
                tau = mean_tau("llava_onevision", drop, "two_stage", mode, args.seeds, args.new)
                print(f"| llava_onevision | {drop} | two_stage | {mode} | {tau:.2f} |")
        for family in tm.FAMILIES:
            for selector in ("two_stage", "attention", "uniform", "random"):
                tau = mean_tau(family, 0.75, selector, None, args.seeds, args.new)
                print(f"| {family} | 0.75 | {selector} | original | {tau:.2f} |")


if __name__ == "__main__":
    main()
