"""``specvlm demo``: one video, one question, the target alone vs SpecVLM, side by side.

Loads the embedded micro pair (``specvlm/assets/micro/``) or any supported checkpoint pair,
makes a clip (or reads ``--video``), asks a question, and prints the answer, whether it is
identical to the target's own greedy answer, tau, video tokens kept / total, and the decode and
end-to-end speedups against the target's plain ``generate``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

import specvlm
from specvlm.devices import cuda_devices
from specvlm.micro.data import held_out_clip
from specvlm.selectors import NAMES
from specvlm.tools.common import ToolError, checkpoint_pair, inputs_to, load_pair, speedup
from specvlm.tools.timing import time_alternately
from specvlm.tools.video_input import VideoPrompter, read_video, sample_frames
from specvlm.tools.viz import save_pruning_figure
from specvlm.trees import tree_of_size


def _progress(step: int, total: int, what: str) -> None:
    print(f"[{step}/{total}] {what}", file=sys.stderr, flush=True)


def _check_args(args) -> None:
    if args.selector not in NAMES:
        raise ToolError(f"unknown selector {args.selector!r}; choose one of {', '.join(NAMES)}")
    if not 0.0 <= args.drop_rate < 1.0:
        raise ToolError(f"--drop-rate must be in [0, 1), got {args.drop_rate}")
    if args.max_new_tokens < 1:
        raise ToolError("--max-new-tokens must be >= 1")
    if args.seed < 0:
        raise ToolError("--seed must be >= 0")
    if args.repeats < 1:
        raise ToolError("--repeats must be >= 1")
    if args.frames < 1:
        raise ToolError("--frames must be >= 1")
    if args.tree_size is not None and not 1 <= args.tree_size <= 256:
        raise ToolError("--tree-size must be in [1, 256]")
    if args.dtype not in (None, "float32", "float16", "bfloat16"):
        raise ToolError(f"--dtype must be float32, float16 or bfloat16, got {args.dtype!r}")
    if args.video is not None and not os.path.isfile(args.video):
        raise ToolError(f"video file not found: {args.video}")


def run(args) -> dict:
    """Run the demo; returns the result record (also printed, and written with ``--json``).
    :class:`~specvlm.tools.common.ToolError` for a bad argument or input."""
    _check_args(args)
    target_dir, draft_dir, device = checkpoint_pair(args)
    steps = 5

    _progress(1, steps, f"loading {target_dir} and {draft_dir}")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    target, draft = load_pair(target_dir, draft_dir, device, dtype)
    try:
        prompter = VideoPrompter(target_dir, target.config)
    except OSError as err:
        raise ToolError(str(err)) from err

    _progress(2, steps, "preparing the clip")
    if args.video:
        video = sample_frames(read_video(args.video), args.frames)
    else:
        video = held_out_clip(args.seed)
    inputs = inputs_to(prompter(video, args.prompt), device, dtype)

    size = args.tree_size or (4 if device.type == "cpu" else 48)
    sd = specvlm.accelerate(
        (target, draft), drop_rate=args.drop_rate, selector=args.selector, tree=tree_of_size(size)
    )
    devices = cuda_devices(target, draft)
    gen = dict(max_new_tokens=args.max_new_tokens)

    _progress(3, steps, "warming up both paths")
    with torch.no_grad():
        target.generate(**inputs, do_sample=False, max_new_tokens=2)
        sd.generate(**inputs, max_new_tokens=2)

    _progress(
        4,
        steps,
        f"timing the target alone and SpecVLM (draft on {1 - args.drop_rate:.0%} of the video "
        f"tokens), {args.repeats} runs each",
    )
    methods = {
        "target": lambda s: target.generate(**inputs, do_sample=False, streamer=s, **gen),
        "specvlm": lambda s: sd.generate(**inputs, streamer=s, **gen),
    }
    with torch.no_grad():
        timings = time_alternately(methods, args.repeats, devices)
    (ref_outs, ref_t), (sd_outs, sd_t) = timings["target"], timings["specvlm"]
    ref, out = ref_outs[0], sd_outs[0]
    identical = all(o.tolist() == ref.tolist() for o in ref_outs + sd_outs)
    stats = sd.last_stats
    _progress(5, steps, "done")

    prompt_len = inputs["input_ids"].shape[1]
    tok = prompter.tokenizer
    record = {
        "identical": identical,
        "mean_accepted_length": stats.mean_accepted_length,
        "decode_speedup": speedup(ref_t.decode_s, sd_t.decode_s),
        "e2e_speedup": speedup(ref_t.e2e_s, sd_t.e2e_s),
        "video_tokens": stats.video_tokens,
        "kept_video_tokens": stats.kept_video_tokens,
        "text": tok.decode(out[0, prompt_len:], skip_special_tokens=True).strip(),
        "target_text": tok.decode(ref[0, prompt_len:], skip_special_tokens=True).strip(),
        "selector": args.selector,
        "drop_rate": args.drop_rate,
        "prompt": args.prompt,
        "new_tokens": stats.new_tokens,
        "target_decode_s": ref_t.decode_s,
        "specvlm_decode_s": sd_t.decode_s,
        "target_e2e_s": ref_t.e2e_s,
        "specvlm_e2e_s": sd_t.e2e_s,
        "target_ttft_s": ref_t.ttft_s,
        "specvlm_ttft_s": sd_t.ttft_s,
        "repeats": args.repeats,
        "device": str(device),
        "target": target_dir,
        "draft": draft_dir,
    }
    if args.save_viz and stats.video_scores is not None:
        title = f"{args.prompt}  ->  {record['text']}"
        save_pruning_figure(
            video,
            stats.video_grid,
            stats.video_scores,
            stats.kept_indices,
            args.save_viz,
            title=title,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return record


def print_record(rec: dict) -> None:
    def fmt(x):
        return "n/a" if x is None else f"{x:.2f}x"

    print(f"question : {rec['prompt']}")
    print(f"answer   : {rec['text']}")
    print(f"identical to the target's own greedy answer: {'yes' if rec['identical'] else 'NO'}")
    print(f"tau (tokens per target forward): {rec['mean_accepted_length']:.2f}")
    print(f"video tokens given to the draft: {rec['kept_video_tokens']} of {rec['video_tokens']}")
    print(
        f"decode speedup: {fmt(rec['decode_speedup'])}   end-to-end: {fmt(rec['e2e_speedup'])}"
        f"   ({rec['new_tokens']} tokens on {rec['device']})"
    )
    ttft, ref_ttft = 1000 * rec["specvlm_ttft_s"], 1000 * rec["target_ttft_s"]
    print(
        f"time to first token: {ttft:.0f} ms (target alone {ref_ttft:.0f} ms; SpecVLM's "
        "includes scoring, pruning and the draft prefill)"
    )


def main(args) -> int:
    start = time.perf_counter()
    try:
        rec = run(args)
    except ToolError as err:
        print(f"specvlm demo: error: {err}", file=sys.stderr)
        return 2
    print_record(rec)
    print(f"(demo took {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0 if rec["identical"] else 1
