"""Captured draft steps on the embedded micro pair, on this machine: what a draft forward
costs eager and captured, and what ``generate`` decodes with each (``capture=False`` /
``capture=True``), beside the target's own ``generate``.

    PYTHONPATH=. python bench/captured_draft.py [--frames 8 32] [--repeats 3] [--threads 1]
        [--out docs/bench/captured_draft.json]

1. **Per forward**: the draft's prefilled side (a real prompt, pruned at drop rate 0.9), one
   forward of ``n`` tokens (``n`` = 1, 2, 8: the chain and a tree level) eager
   (:class:`specvlm.side.Side`) and captured (:class:`specvlm.capture.StaticSide`), each the
   median of 200 forwards rolled back; the compile time of each width.
2. **End to end**: the target's ``generate``, then SpecVLM (drop rate 0.9, default tree) with
   ``capture=False`` and ``capture=True`` (compiled before timing), alternately, each call's
   fastest decode time and its tau. Outputs must be identical (checked).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from transformers import AutoConfig

import specvlm
from specvlm import selectors
from specvlm.attention import BasePlan, MaskedPlan, routed_attention
from specvlm.capture import CapturePool, StaticSide
from specvlm.families import family_of
from specvlm.micro.data import held_out_clip
from specvlm.micro.tokenizer import VIDEO_ID
from specvlm.speculation import draft_prefill, kept_positions
from specvlm.tools.common import EMBEDDED, hardware, load_pair
from specvlm.tools.timing import timed
from specvlm.tools.video_input import VideoPrompter

PROMPT = "describe the video ."
WIDTHS = (1, 2, 8)
FORWARDS = 200


def _plan(side, n: int):
    if n == 1:
        return BasePlan()
    mask = torch.ones(1, 1, n, side.length + n, dtype=torch.bool)
    mask[0, 0, :, side.length :] = torch.ones(n, n, dtype=torch.bool).tril()
    return MaskedPlan(mask)


def per_forward(side, n: int) -> float:
    """Median seconds of one forward of ``n`` tokens (rolled back after each)."""
    base, plan, times = side.length, _plan(side, n), []
    mask = torch.ones(1, base + n, dtype=torch.long)
    for _ in range(FORWARDS):
        t0 = time.perf_counter()
        side.step(list(range(3, 3 + n)), torch.arange(n), plan, mask, slice(None))
        times.append(time.perf_counter() - t0)
        side.keep(base, [])
    return statistics.median(times)


def forwards(target, draft, inputs) -> dict:
    fam = family_of(draft, "draft")
    layout = fam.video_layout(target, inputs["input_ids"], inputs)
    scores = torch.rand(layout.num_tokens)  # which tokens are kept does not change the cost
    keep, _ = kept_positions(
        inputs["input_ids"].shape[1],
        layout,
        scores,
        0.9,
        selectors.resolve("two_stage", mass=0.4, seed=0),
    )
    vocab = target.lm_head.weight.shape[0]
    out = {"draft_context": int(keep.sum())}
    with torch.no_grad(), routed_attention(fam.decoder(draft)):
        eager = draft_prefill(fam, draft, inputs, keep, "original", vocab)
        pool = CapturePool(
            fam.decoder(draft), fam.lm_head(draft), draft.get_input_embeddings(), "draft"
        )
        with pool.runner(eager.length + 64) as runner:
            static = StaticSide.adopt(
                draft_prefill(fam, draft, inputs, keep, "original", vocab), runner
            )
            for n in WIDTHS:
                t0 = time.perf_counter()
                per_forward_once(static, n)
                compile_s = time.perf_counter() - t0
                e, c = per_forward(eager, n), per_forward(static, n)
                out[f"n{n}"] = {
                    "eager_ms": 1e3 * e,
                    "captured_ms": 1e3 * c,
                    "ratio": c / e,
                    "compile_s": compile_s,
                }
    return out


def per_forward_once(side, n: int) -> None:
    base = side.length
    side.step(list(range(3, 3 + n)), torch.arange(n), _plan(side, n), None, slice(None))
    side.keep(base, [])


def end_to_end(target, draft, inputs, new: int, repeats: int) -> dict:
    decoders = {
        "eager": specvlm.accelerate((target, draft), drop_rate=0.9, capture=False),
        "captured": specvlm.accelerate((target, draft), drop_rate=0.9, capture=True),
    }
    gen = dict(max_new_tokens=new, do_sample=False)
    decoders["captured"].generate(**inputs, **gen)  # compiles the tree's widths
    rows: dict[str, dict] = {}
    ref = None
    for _ in range(repeats):
        for name, generate in [("target", target.generate)] + [
            (k, d.generate) for k, d in decoders.items()
        ]:
            with torch.no_grad():
                out, timing = timed(partial(_call, generate, inputs, gen))
            ref = out if ref is None else ref
            row = rows.setdefault(name, {"decode_s": float("inf"), "identical": True})
            row["decode_s"] = min(row["decode_s"], timing.decode_s)
            row["identical"] &= out.tolist() == ref.tolist()
            row["new_tokens"] = out.shape[1] - inputs["input_ids"].shape[1]
            if name != "target":
                row["tau"] = decoders[name].last_stats.mean_accepted_length
                row["captured"] = decoders[name].last_stats.captured
    for row in rows.values():
        row["decode_speedup"] = rows["target"]["decode_s"] / row["decode_s"]
    return rows


def _call(generate, inputs, gen, streamer):
    return generate(**inputs, **gen, streamer=streamer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/bench/captured_draft.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tdir, ddir = str(EMBEDDED / "target"), str(EMBEDDED / "draft")
    target, draft = load_pair(tdir, ddir, torch.device("cpu"))
    prompter = VideoPrompter(tdir, AutoConfig.from_pretrained(tdir))
    record = {"hardware": hardware(torch.device("cpu")), "threads": args.threads, "runs": []}
    for frames in args.frames:
        inputs = prompter(held_out_clip(0, frames=frames), PROMPT)
        run = {"frames": frames, "video_tokens": int((inputs["input_ids"] == VIDEO_ID).sum())}
        run["forwards"] = forwards(target, draft, inputs)
        run["generate"] = end_to_end(target, draft, inputs, args.new, args.repeats)
        record["runs"].append(run)
        print(json.dumps(run, indent=1))
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
