"""``specvlm demo``: one video, one question, the target alone, naive speculative decoding and
SpecVLM, side by side.

Loads the embedded micro pair (``specvlm/assets/micro/``) or any supported checkpoint pair,
makes a clip (or reads ``--video``), asks a question, and prints the answer, whether it is
identical to the target's own greedy answer, tau, video tokens kept / total, and the decode and
end-to-end speedups against the target's plain ``generate``; then naive SD (the same loop and
tree, the draft on every video token) beside SpecVLM: tau, decode and end-to-end speedups and
time to first token of each. With ``--temperature`` (or
``--top-p`` / ``--top-k``) both sample instead: SpecVLM's answer is then a sample of the
target's distribution, not a copy of the target's own sample.

Order of work: every argument, path and input (the video is read and sampled here) is checked
before a model loads; the results are printed before ``--json`` / ``--save-viz`` are written.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoConfig

import specvlm
from specvlm.devices import cuda_devices
from specvlm.micro.data import held_out_clip
from specvlm.stats import GenerationStats
from specvlm.tools.arguments import check_demo_args
from specvlm.tools.common import (
    ToolError,
    checkpoint_pair,
    describe_sampling,
    inputs_to,
    load_pair,
    per_token_speedup,
)
from specvlm.tools.comparison import naive_decoder
from specvlm.tools.timing import time_alternately
from specvlm.tools.video_input import VideoPrompter, read_video
from specvlm.trees import tree_of_size

STEPS = 5


@dataclass
class DemoResult:
    """What one demo run produced: the printed and saved ``record``, and what the figure
    needs (the frames, and the stats of SpecVLM's last run)."""

    record: dict
    frames: np.ndarray
    stats: GenerationStats
    mass: float


def _progress(step: int, what: str) -> None:
    print(f"[{step}/{STEPS}] {what}", file=sys.stderr, flush=True)


@dataclass
class _Prepared:
    """What :func:`_prepare` checked and made, before any model loads."""

    sampling: dict | None
    target_dir: str
    draft_dir: str
    device: torch.device
    frames: np.ndarray
    source: str
    prompter: VideoPrompter
    cpu_inputs: dict


def _prepare(args, frames: np.ndarray | None) -> _Prepared:
    """Every check, the frames and the prompt's inputs on the CPU (:class:`ToolError` for a bad
    argument or input; nothing is printed before)."""
    sampling = check_demo_args(args)
    target_dir, draft_dir, device = checkpoint_pair(args)
    if args.video:  # read before anything is printed: a bad video is the only output
        if frames is None:
            frames = read_video(args.video, args.frames)
        source = f"read {args.frames} frames of {args.video}"
    else:
        clip = args.clip or 0
        frames = held_out_clip(clip, frames=args.frames)
        source = f"made held-out clip {clip} ({args.frames} frames)"
    try:  # the prompt needs the config and the processor files only, not the weights
        prompter = VideoPrompter(target_dir, AutoConfig.from_pretrained(target_dir))
        cpu_inputs = prompter(frames, args.prompt)
    except OSError as err:
        raise ToolError(" ".join(str(err).split())) from err
    return _Prepared(sampling, target_dir, draft_dir, device, frames, source, prompter, cpu_inputs)


def run(args, frames: np.ndarray | None = None) -> DemoResult:
    """Run the demo: checks, the clip, the models, the timed runs; returns the result (printed
    and written by :func:`main`). :class:`~specvlm.tools.common.ToolError` for a bad argument
    or input, always before a model loads. ``frames``: ``--video``'s frames when the caller
    has read them already (the CLI reads them with its checks, before torch loads)."""
    prep = _prepare(args, frames)
    sampling, device, seed = prep.sampling, prep.device, args.seed or 0
    _progress(1, prep.source)
    _progress(2, f"loading {prep.target_dir} and {prep.draft_dir}")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    target, draft = load_pair(prep.target_dir, prep.draft_dir, device, dtype)
    inputs = inputs_to(prep.cpu_inputs, device, dtype)

    size = args.tree_size or (4 if device.type == "cpu" else 48)
    sd = specvlm.accelerate(
        (target, draft),
        drop_rate=args.drop_rate,
        selector=args.selector,
        tree=tree_of_size(size),
        seed=seed,
    )
    naive = naive_decoder(target, draft, tree=tree_of_size(size), seed=seed)
    devices = cuda_devices(target, draft)
    gen = dict(max_new_tokens=args.max_new_tokens, **(sampling or {"do_sample": False}))

    def target_generate(streamer, **kw):
        if sampling:
            torch.manual_seed(seed)
        return target.generate(**inputs, streamer=streamer, **{**gen, **kw})

    def sd_generate(streamer, decoder=sd, **kw):
        extra = {"generator": torch.Generator(device).manual_seed(seed)} if sampling else {}
        return decoder.generate(**inputs, streamer=streamer, **{**gen, **kw}, **extra)

    def naive_generate(streamer, **kw):
        return sd_generate(streamer, naive, **kw)

    _progress(3, "warming up both paths")
    with torch.no_grad():
        target_generate(None, max_new_tokens=2)
        sd_generate(None, max_new_tokens=2)
        naive_generate(None, max_new_tokens=2)

    _progress(
        4,
        f"timing the target alone, naive SD and SpecVLM (draft on {1 - args.drop_rate:.0%} of "
        f"the video tokens; {describe_sampling(sampling, seed)}), {args.repeats} "
        f"run{'s' * (args.repeats > 1)} each",
    )
    with torch.no_grad():
        timings = time_alternately(
            {"target": target_generate, "naive_sd": naive_generate, "specvlm": sd_generate},
            args.repeats,
            devices,
        )
    _progress(5, "done")
    record = _record(args, prep, timings, sd.last_stats, naive.last_stats, inputs, size)
    return DemoResult(record, prep.frames, sd.last_stats, sd.mass)


def _record(args, prep: _Prepared, timings: dict, stats, naive_stats, inputs, size) -> dict:
    """The printed and saved results of the timed runs."""
    (ref_outs, ref_t), (sd_outs, sd_t) = timings["target"], timings["specvlm"]
    naive_outs, naive_t = timings["naive_sd"]
    ref, out = ref_outs[0], sd_outs[0]
    sampling, seed = prep.sampling, args.seed or 0
    prompt_len = inputs["input_ids"].shape[1]
    tok = prep.prompter.tokenizer
    speculated = bool(stats.accepted_lengths)  # a first token that ends the answer: no step
    if sampling:  # a sample of the target's distribution: equality is not expected
        identical = None
    else:
        identical = all(o.tolist() == ref.tolist() for o in ref_outs + sd_outs + naive_outs)

    def decode_speedup(method_t):  # no decoding step without speculation
        if not speculated:
            return None
        return per_token_speedup(
            ref_t.decode_s, ref_t.new_tokens - 1, method_t.decode_s, method_t.new_tokens - 1
        )

    def e2e_speedup(method_t):
        return per_token_speedup(ref_t.e2e_s, ref_t.new_tokens, method_t.e2e_s, method_t.new_tokens)

    return {
        "mode": "sample" if sampling else "greedy",
        "identical": identical,
        "speculated": speculated,
        "mean_accepted_length": stats.mean_accepted_length if speculated else None,
        "decode_speedup": decode_speedup(sd_t),
        "e2e_speedup": e2e_speedup(sd_t),
        "video_tokens": stats.video_tokens,
        "kept_video_tokens": stats.kept_video_tokens if speculated else None,
        "text": tok.decode(out[0, prompt_len:], skip_special_tokens=True).strip(),
        "target_text": tok.decode(ref[0, prompt_len:], skip_special_tokens=True).strip(),
        "selector": args.selector,
        "drop_rate": args.drop_rate,
        "tree_size": size,
        "prompt": args.prompt,
        "video": args.video,
        "clip": None if args.video else (args.clip or 0),
        "frames": args.frames,
        "sampling": sampling,
        "seed": seed if (sampling or args.selector == "random") else None,
        "new_tokens": sd_t.new_tokens,
        "target_new_tokens": ref_t.new_tokens,
        "max_new_tokens": args.max_new_tokens,
        "target_decode_s": ref_t.decode_s,
        "specvlm_decode_s": sd_t.decode_s,
        "target_e2e_s": ref_t.e2e_s,
        "specvlm_e2e_s": sd_t.e2e_s,
        "target_ttft_s": ref_t.ttft_s,
        "specvlm_ttft_s": sd_t.ttft_s,
        "naive_mean_accepted_length": naive_stats.mean_accepted_length if speculated else None,
        "naive_decode_speedup": decode_speedup(naive_t),
        "naive_e2e_speedup": e2e_speedup(naive_t),
        "naive_decode_s": naive_t.decode_s,
        "naive_e2e_s": naive_t.e2e_s,
        "naive_ttft_s": naive_t.ttft_s,
        "repeats": args.repeats,
        "device": str(prep.device),
        "target": prep.target_dir,
        "draft": prep.draft_dir,
    }


def print_record(rec: dict) -> None:
    def fmt(x):
        return "n/a" if x is None else f"{x:.2f}x"

    print(f"question : {rec['prompt']}")
    if rec["mode"] == "greedy":
        print(f"answer   : {rec['text']}")
        same = "yes" if rec["identical"] else "NO"
        print(f"identical to the target's own greedy answer: {same}")
    else:
        seed = rec["seed"]
        print(f"{describe_sampling(rec['sampling'], seed)} (both paths seeded with {seed})")
        print(f"SpecVLM  : {rec['text']}")
        print(f"target   : {rec['target_text']}")
        print(
            "SpecVLM's answer is a sample of the target's own distribution (lossless sampling), "
            "not a copy of the target's sample: the two may differ"
        )

    def count(n):
        return f"{n} token{'s' * (n != 1)}"

    tokens = f"{count(rec['new_tokens'])} on {rec['device']}"
    if rec["mode"] == "sample":
        tokens = (
            f"SpecVLM {count(rec['new_tokens'])}, target {rec['target_new_tokens']}; time per "
            f"token; on {rec['device']}"
        )
    if not rec["speculated"]:
        why = (
            "--max-new-tokens 1"
            if rec["max_new_tokens"] == 1
            else "the answer ended at its first token"
        )
        print(
            f"nothing speculated ({why}): the first token comes from the target's prefill, "
            "so no video token was pruned, nothing was drafted or verified: no tau, no decode "
            "time to compare"
        )
        print(f"end-to-end: {fmt(rec['e2e_speedup'])}   ({tokens})")
    else:
        print(f"tau (tokens per target forward): {rec['mean_accepted_length']:.2f}")
        print(
            f"video tokens given to the draft: {rec['kept_video_tokens']} of {rec['video_tokens']}"
        )
        print(
            f"decode speedup: {fmt(rec['decode_speedup'])}   end-to-end: "
            f"{fmt(rec['e2e_speedup'])}   ({tokens})"
        )
    ttft, ref_ttft = 1000 * rec["specvlm_ttft_s"], 1000 * rec["target_ttft_s"]
    extra = "scoring, pruning and the draft prefill" if rec["speculated"] else "scoring"
    print(
        f"time to first token: {ttft:.0f} ms (target alone {ref_ttft:.0f} ms; SpecVLM's "
        f"includes {extra})"
    )
    if rec["speculated"]:
        print_side_by_side(rec)


def print_side_by_side(rec: dict) -> None:
    """The target alone, naive SD and SpecVLM in one table: tau, decode and end-to-end speedup
    against the target alone (per token), time to first token."""

    def fmt(x, spec=".2f", unit="x"):
        return "-" if x is None else f"{x:{spec}}{unit}"

    rows = [
        ("target alone", None, 1.0, 1.0, rec["target_ttft_s"]),
        (
            "naive SD (drop 0)",
            rec["naive_mean_accepted_length"],
            rec["naive_decode_speedup"],
            rec["naive_e2e_speedup"],
            rec["naive_ttft_s"],
        ),
        (
            f"SpecVLM (drop {rec['drop_rate']:g})",
            rec["mean_accepted_length"],
            rec["decode_speedup"],
            rec["e2e_speedup"],
            rec["specvlm_ttft_s"],
        ),
    ]
    print(f"side by side ({rec['tree_size']}-node tree for both speculative methods):")
    print(f"  {'':<20} {'tau':>5} {'decode':>7} {'end-to-end':>11} {'first token':>12}")
    for name, tau, dec, e2e, ttft in rows:
        print(
            f"  {name:<20} {fmt(tau, '.2f', ''):>5} {fmt(dec):>7} {fmt(e2e):>11} "
            f"{fmt(1000 * ttft, '.0f', ' ms'):>12}"
        )


def write_outputs(args, result: DemoResult) -> list[str]:
    """``--json`` and ``--save-viz``, after the results are printed; returns the paths."""
    written = []
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.record, f, indent=1)
        written.append(args.json)
    stats = result.stats
    if args.save_viz and stats.video_scores is not None:
        from specvlm.tools.viz import save_pruning_figure

        rec = result.record
        save_pruning_figure(
            result.frames,
            stats.video_grid,
            stats.video_scores,
            stats.kept_indices if rec["speculated"] else None,
            args.save_viz,
            selector=rec["selector"],
            mass=result.mass,
            drop_rate=rec["drop_rate"],
            tau=rec["mean_accepted_length"],
            subtitle=f"{rec['prompt']}  ->  {rec['text']}",
        )
        written.append(args.save_viz)
    return written


def main(args, frames: np.ndarray | None = None) -> int:
    """``specvlm demo``; ``frames``: ``--video``'s frames if already read (see :func:`run`)."""
    start = time.perf_counter()
    try:
        result = run(args, frames)
    except ToolError as err:
        print(f"specvlm demo: error: {err}", file=sys.stderr)
        return 2
    print_record(result.record)
    try:
        written = write_outputs(args, result)
    except OSError as err:
        print(f"specvlm demo: error: writing the outputs failed: {err}", file=sys.stderr)
        return 2
    if written:
        print("wrote " + ", ".join(written), file=sys.stderr)
    print(f"(demo took {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 1 if result.record["identical"] is False else 0
