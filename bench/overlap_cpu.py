"""Overlapped drafting on this CPU: the embedded pair, SpecVLM's sequential loop against the
overlapped one (``accelerate(overlap=True)``: the draft on a thread of its own), on held-out
caption questions, greedy. Every output is checked against the target's own ``generate``.

    PYTHONPATH=. python bench/overlap_cpu.py [--clips 24] [--frames 60] [--repeats 3]
        [--threads 1,2] [--capture] [--out docs/bench/overlap_cpu.json]

Per intra-op thread count (``torch.set_num_threads``), each clip runs both loops alternately
``--repeats`` times and the fastest decode of each counts; the ratio is summed decode time,
sequential over overlapped. Also reported: the share of verifications whose next tree had been
drafted ahead and was used (``lookahead_used``), the share of the draft worker's time hidden
behind the target (``overlap_hidden``), the time per verification step of each loop, and prompt
processing (target prefill and scoring, pruning, draft prefill: the draft's vision tower runs
during the target's prefill when overlapped), the same fastest runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

import specvlm
from specvlm.micro.data import held_out_clip
from specvlm.tools.common import EMBEDDED, load_pair
from specvlm.tools.video_input import VideoPrompter

PROMPT = "describe the video ."


def measure(
    target, draft, prompts: list[dict], repeats: int, max_new_tokens: int, capture: bool = False
) -> dict:
    """Sequential and overlapped decode over ``prompts`` (fixed settings: drop 0.9, default
    tree; ``capture``: both sides on captured steps, compiled in an untimed warm-up call per
    prompt), fastest of ``repeats`` per prompt and loop."""
    decoders = {
        ov: specvlm.accelerate((target, draft), policy=None, overlap=ov, capture=capture)
        for ov in (False, True)
    }
    totals = {ov: dict(decode_s=0.0, prompt_s=0.0, steps=0, tokens=0) for ov in (False, True)}
    hits = lookaheads = 0
    busy = wait = 0.0
    for inputs in prompts:
        expected = target.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        if capture:
            for sd in decoders.values():
                sd.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        best: dict = {}
        for _ in range(repeats):
            for ov, sd in decoders.items():
                out = sd.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
                if not torch.equal(out, expected):
                    raise AssertionError("an output differs from the target's")
                stats = sd.last_stats
                if ov not in best or stats.decode < best[ov].decode:
                    best[ov] = stats
        for ov, stats in best.items():
            totals[ov]["decode_s"] += stats.decode
            totals[ov]["prompt_s"] += stats.target_prefill + stats.pruning + stats.draft_prefill
            totals[ov]["steps"] += len(stats.accepted_lengths)
            totals[ov]["tokens"] += stats.new_tokens
        hits += best[True].lookahead_hits
        lookaheads += best[True].lookahead_steps
        busy += best[True].overlap_busy
        wait += best[True].overlap_wait
    seq, ov = totals[False], totals[True]
    return {
        "decode_speedup": seq["decode_s"] / ov["decode_s"],
        "prompt_speedup": seq["prompt_s"] / ov["prompt_s"],
        "sequential": seq,
        "overlapped": ov,
        "sequential_ms_per_step": 1e3 * seq["decode_s"] / max(seq["steps"], 1),
        "overlapped_ms_per_step": 1e3 * ov["decode_s"] / max(ov["steps"], 1),
        "lookahead_steps": lookaheads,
        "lookahead_hits": hits,
        "lookahead_used": hits / max(ov["steps"], 1),
        "overlap_hidden": max(0.0, 1.0 - wait / busy) if busy else 0.0,
        "worker_ms_per_lookahead": 1e3 * busy / max(lookaheads, 1),
        # the look-ahead gate's estimates over every call of the overlapped decoder
        "gate": decoders[True].last_stats.overlap_reason,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--capture", action="store_true", help="captured steps on both sides")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    target, draft = load_pair(EMBEDDED / "target", EMBEDDED / "draft", torch.device("cpu"))
    prompter = VideoPrompter(str(EMBEDDED / "target"), target.config)
    prompts = [prompter(held_out_clip(c, frames=args.frames), PROMPT) for c in range(args.clips)]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "clips": args.clips,
        "frames": args.frames,
        "video_tokens": int((prompts[0]["input_ids"] == target.config.video_token_id).sum()),
        "capture": args.capture,
        "by_threads": {},
    }
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        with torch.no_grad():
            row = measure(target, draft, prompts, args.repeats, args.max_new_tokens, args.capture)
        result["by_threads"][threads] = row
        print(
            f"threads {threads}: decode {row['decode_speedup']:.2f}x the sequential loop, "
            f"{row['sequential_ms_per_step']:.1f} -> {row['overlapped_ms_per_step']:.1f} ms per "
            f"step, look-ahead used {row['lookahead_used']:.0%} of steps, worker hidden "
            f"{row['overlap_hidden']:.0%}, {row['worker_ms_per_lookahead']:.1f} ms per look-ahead; "
            f"prompt processing {row['prompt_speedup']:.2f}x"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
