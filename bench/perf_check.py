"""Measure what the performance model needs and what it should predict, on this machine, with the
embedded micro pair: writes the record that ``tests/test_perf_model_measured.py`` checks.

    PYTHONPATH=. python bench/perf_check.py [--out docs/bench/perf_check.json] [--clips 12]
        [--repeats 5]

1. **Forward costs** (the model's inputs): both models' forwards of 1..64 tokens at the pair's
   contexts, measured by :mod:`specvlm.calibration` (the automatic policy's own measurement),
   several times during the run; each time the fastest.
2. **Loop overheads** (inputs too): the seconds a decoding loop spends outside the forwards, per
   token of ``target.generate`` and per speculative step (a constant plus a part per verified
   row), fitted by least squares on *other* clips (``--fit-clips``, seeds 100+) than the ones
   checked.
3. **Measurements** (what the model must predict): on ``--clips`` held-out clips, the target's
   ``generate``, naive SD (drop rate 0) and SpecVLM (drop rate 0.9) with three trees, run
   alternately ``--repeats`` times, each call's fastest decode time, its tau, new tokens and the
   depth drafting reached at each step.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from functools import partial
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig

import specvlm
from specvlm import calibration
from specvlm.attention import routed_attention
from specvlm.calibration import Probe
from specvlm.families import family_of
from specvlm.micro.data import held_out_clip
from specvlm.selectors import keep_count
from specvlm.tools.common import EMBEDDED, hardware, inputs_to, load_pair
from specvlm.tools.timing import timed
from specvlm.tools.video_input import VideoPrompter
from specvlm.trees import chain, default_tree, tree_of_size

PROMPT = "describe the video ."
NEW = 24
TREES = {"tree48": default_tree(), "chain4": chain(4), "tree8": tree_of_size(8)}
DROPS = {"naive_sd": 0.0, "specvlm": 0.9}


def methods():
    out = {"autoregressive": None}
    for tree_name, tree in TREES.items():
        for method, drop in DROPS.items():
            out[f"{method}/{tree_name}"] = (drop, tree)
    return out


def measure_costs(target, draft, contexts) -> dict:
    fam = family_of(target)
    probes = [
        Probe("target", target, contexts["target"], calibration.TARGET_WIDTHS),
        Probe("draft", draft, contexts["draft"], calibration.DRAFT_WIDTHS),
    ]
    with (
        torch.no_grad(),
        routed_attention(fam.decoder(target)),
        routed_attention(fam.decoder(draft)),
    ):
        return calibration.measure(fam, probes, repeats=3)


def merge(best: dict | None, new: dict) -> dict:
    if best is None:
        return new
    return {
        key: (min(best[key][0], p), {n: min(best[key][1][n], s) for n, s in row.items()})
        for key, (p, row) in new.items()
    }


def run_clips(target, draft, prompter, seeds, repeats, on_round=None) -> list[dict]:
    """Every method on every clip, alternating, ``repeats`` rounds; per (clip, method) the
    fastest decode time and what the call did."""
    runs: dict[tuple[int, str], dict] = {}
    for _ in range(repeats):
        for seed in seeds:
            inputs = inputs_to(prompter(held_out_clip(seed), PROMPT), torch.device("cpu"))
            prompt = inputs["input_ids"].shape[1]
            for name, cfg in methods().items():
                if cfg is None:
                    out, t = timed(partial(_generate, target.generate, inputs))
                    record = {}
                else:
                    drop, tree = cfg
                    sd = specvlm.accelerate((target, draft), drop_rate=drop, tree=tree)
                    out, t = timed(partial(_generate, sd.generate, inputs))
                    st = sd.last_stats
                    mid = (t.new_tokens - 1) // 2
                    kept = prompt - st.video_tokens + keep_count(st.video_tokens, drop)
                    record = {
                        "tree": [list(p) for p in tree.paths],
                        "ctx_d": kept + mid,
                        "drafted_depths": st.drafted_depths,
                        "tau": st.mean_accepted_length,
                    }
                key = (seed, name)
                record.update(
                    clip=seed,
                    method=name,
                    new_tokens=t.new_tokens,
                    ctx_t=prompt + (t.new_tokens - 1) // 2,
                    decode_s=min(t.decode_s, runs.get(key, {}).get("decode_s", float("inf"))),
                )
                runs[key] = record
        if on_round is not None:
            on_round()
    return list(runs.values())


def _generate(generate, inputs: dict, streamer):
    return generate(**inputs, streamer=streamer, max_new_tokens=NEW, do_sample=False)


def fit_overheads(runs: list[dict], costs: dict) -> dict:
    """Least squares: AR's per-token overhead; SD's per-step ``a + b * (nodes + 1)``."""
    from specvlm.tools.perf_model import Measured, predict_measured_decode

    target, draft = (Measured(_table(costs[role])) for role in ("target", "draft"))
    token_rows, step_rows = [], []
    for run in runs:
        rest = run["decode_s"] - predict_measured_decode(run, target, draft)
        if "tree" not in run:
            token_rows.append((run["new_tokens"] - 1, rest))
            continue
        widths = _widths(run["tree"])
        nodes = sum(sum(widths[:d]) + 1 for d in run["drafted_depths"])
        step_rows.append((len(run["drafted_depths"]), nodes, rest))
    token = sum(r for _, r in token_rows) / sum(n for n, _ in token_rows)
    # normal equations of rest = a * steps + b * nodes
    sxx = sum(s * s for s, _, _ in step_rows)
    sxy = sum(s * n for s, n, _ in step_rows)
    syy = sum(n * n for _, n, _ in step_rows)
    sxr = sum(s * r for s, _, r in step_rows)
    syr = sum(n * r for _, n, r in step_rows)
    det = sxx * syy - sxy * sxy
    a = (sxr * syy - syr * sxy) / det
    b = (syr * sxx - sxr * sxy) / det
    return {"token": token, "step": a, "step_per_node": b}


def _widths(paths) -> list[int]:
    depth = max(len(p) for p in paths)
    return [sum(1 for p in paths if len(p) == d) for d in range(1, depth + 1)]


def _table(entry: dict):
    fc = calibration.ForwardCosts()
    fc.forward = {
        int(c): {int(n): s for n, s in row.items()} for c, row in entry["forward"].items()
    }
    fc.prefill = {int(c): s for c, s in entry["prefill"].items()}
    return fc


def as_tables(best: dict) -> dict:
    tables = {"target": {"forward": {}, "prefill": {}}, "draft": {"forward": {}, "prefill": {}}}
    for (role, bucket), (prefill, row) in best.items():
        tables[role]["forward"][bucket] = row
        tables[role]["prefill"][bucket] = prefill
    return tables


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/bench/perf_check.json")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--fit-clips", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tdir, ddir = str(EMBEDDED / "target"), str(EMBEDDED / "draft")
    target, draft = load_pair(tdir, ddir, torch.device("cpu"))
    prompter = VideoPrompter(tdir, AutoConfig.from_pretrained(tdir))
    # contexts: 138-token prompts, 12-token drafts at drop 0.9; answers up to 24 tokens
    contexts = {"target": (128,), "draft": (16, 32, 128)}
    best = None

    def remeasure():
        nonlocal best
        best = merge(best, measure_costs(target, draft, contexts))

    remeasure()
    with torch.no_grad():  # warm-up
        run_clips(target, draft, prompter, [200], 1)
    fit_runs = run_clips(
        target, draft, prompter, range(100, 100 + args.fit_clips), args.repeats, remeasure
    )
    runs = run_clips(target, draft, prompter, range(args.clips), args.repeats, remeasure)
    costs = as_tables(best)
    costs_json = json.loads(json.dumps(costs))  # int keys -> str, as the record stores them
    overheads = fit_overheads(fit_runs, costs_json)
    record = {
        "hardware": hardware(torch.device("cpu")),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": " ".join(["python", "bench/perf_check.py", *sys.argv[1:]]),
        "max_new_tokens": NEW,
        "repeats": args.repeats,
        "costs": costs,
        "overheads": overheads,
        "fit_clips": list(range(100, 100 + args.fit_clips)),
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    taus = {
        m: statistics.mean(r["tau"] for r in runs if r["method"] == m)
        for m in methods()
        if m != "autoregressive"
    }
    print(json.dumps({"overheads": overheads, "tau": taus}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
