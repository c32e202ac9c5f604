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
from specvlm.tools.arguments import capture_option, check_demo_args
from specvlm.tools.common import (
    ToolError,
    checkpoint_pair,
    describe_sampling,
    inputs_to,
    load_pair,
    per_token_speedup,
)
from specvlm.tools.comparison import naive_decoder
from specvlm.tools.compiled import compiled_generate_kwargs, warm_up
from specvlm.tools.demo_report import print_record
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


def _decoders(args, target, draft, device, seed: int, capture):
    """SpecVLM as a user gets it (``accelerate((target, draft))``, the automatic policy; with
    ``--drop-rate`` or ``--tree-size`` those settings fixed) and naive SD (the same loop and
    ``capture``, the draft on every video token, the tree of ``--tree-size``); and that
    tree's size."""
    size = args.tree_size or (4 if device.type == "cpu" else 48)
    fixed = {}
    if args.drop_rate is not None:
        fixed = {"drop_rate": args.drop_rate, "tree": tree_of_size(size)}
    elif args.tree_size is not None:
        fixed = {"tree": tree_of_size(size)}
    sd = specvlm.accelerate(
        (target, draft), selector=args.selector, seed=seed, capture=capture, **fixed
    )
    naive = naive_decoder(target, draft, tree=tree_of_size(size), seed=seed, capture=capture)
    return sd, naive, size


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
    sd, naive, size = _decoders(args, target, draft, device, seed, capture_option(args))
    gen = dict(max_new_tokens=args.max_new_tokens, **(sampling or {"do_sample": False}))

    def target_generate(streamer, **kw):
        if sampling:
            torch.manual_seed(seed)
        return target.generate(**inputs, streamer=streamer, **{**gen, **kw})

    def compiled_generate(streamer):
        return target_generate(streamer, **compiled_generate_kwargs())

    def sd_generate(streamer, decoder=sd, **kw):
        extra = {"generator": torch.Generator(device).manual_seed(seed)} if sampling else {}
        return decoder.generate(**inputs, streamer=streamer, **{**gen, **kw}, **extra)

    methods = {"target": target_generate, "compiled": compiled_generate}
    methods.update(naive_sd=lambda streamer: sd_generate(streamer, naive), specvlm=sd_generate)
    if args.no_compile:
        del methods["compiled"]
    _progress(3, "warming up every path" + " (compiling the target)" * (not args.no_compile))
    with torch.no_grad():
        target_generate(None, max_new_tokens=2)
        compile_s = None if args.no_compile else warm_up(target, inputs, gen)
        sd_generate(None, max_new_tokens=2)
        sd_generate(None, naive, max_new_tokens=2)
    what = "SpecVLM (" + ("automatic policy" if args.drop_rate is None else "fixed settings")
    _progress(
        4,
        f"timing {', '.join(_NAMES[m] for m in methods if m != 'specvlm')} and {what}; "
        f"{describe_sampling(sampling, seed)}), {args.repeats} run{'s' * (args.repeats > 1)} "
        "each, alternating",
    )
    with torch.no_grad():
        timings = time_alternately(methods, args.repeats, cuda_devices(target, draft))
    _progress(5, "done")
    record = _record(args, prep, timings, sd.last_stats, naive.last_stats, inputs, size)
    record["compile_s"] = compile_s
    return DemoResult(record, prep.frames, sd.last_stats, sd.mass)


_NAMES = {
    "target": "the target alone",
    "compiled": "the target compiled",
    "naive_sd": "naive SD",
    "specvlm": "SpecVLM",
}


def _speedups(timings: dict, decoded: bool) -> dict:
    """Per method, per token: decode (None without a decoding step) and end-to-end speedups
    against the target's eager ``generate`` and, where it ran, against the compiled one."""
    out = {}
    for name, (_, t) in timings.items():
        for base, suffix in (("target", ""), ("compiled", "_vs_compiled")):
            if base not in timings:
                out[name, "decode" + suffix] = out[name, "e2e" + suffix] = None
                continue
            ref = timings[base][1]
            out[name, "decode" + suffix] = (
                per_token_speedup(ref.decode_s, ref.new_tokens - 1, t.decode_s, t.new_tokens - 1)
                if decoded
                else None
            )
            out[name, "e2e" + suffix] = per_token_speedup(
                ref.e2e_s, ref.new_tokens, t.e2e_s, t.new_tokens
            )
    return out


def _record(args, prep: _Prepared, timings: dict, stats, naive_stats, inputs, size) -> dict:
    """The printed and saved results of the timed runs."""
    (ref_outs, ref_t), (sd_outs, sd_t) = timings["target"], timings["specvlm"]
    ref, out = ref_outs[0], sd_outs[0]
    sampling, seed = prep.sampling, args.seed or 0
    prompt_len = inputs["input_ids"].shape[1]
    tok = prep.prompter.tokenizer
    decoded = ref_t.new_tokens > 1  # a first token that ends the answer: no decoding step
    speculated = stats.speculated and bool(stats.accepted_lengths)
    naive_speculated = naive_stats.speculated and bool(naive_stats.accepted_lengths)
    outs = [o for outs, _ in timings.values() for o in outs]
    identical = None if sampling else all(o.tolist() == ref.tolist() for o in outs)
    ratio = _speedups(timings, decoded)
    record = {
        "mode": "sample" if sampling else "greedy",
        "identical": identical,
        "policy": stats.policy,
        "speculated": speculated,
        "decoded": decoded,
        "reason": stats.reason,
        "mean_accepted_length": stats.mean_accepted_length if speculated else None,
        "decode_speedup": ratio["specvlm", "decode"],
        "e2e_speedup": ratio["specvlm", "e2e"],
        "decode_speedup_vs_compiled": ratio["specvlm", "decode_vs_compiled"],
        "e2e_speedup_vs_compiled": ratio["specvlm", "e2e_vs_compiled"],
        "video_tokens": stats.video_tokens,
        "kept_video_tokens": stats.kept_video_tokens if speculated else None,
        "text": tok.decode(out[0, prompt_len:], skip_special_tokens=True).strip(),
        "target_text": tok.decode(ref[0, prompt_len:], skip_special_tokens=True).strip(),
        "selector": args.selector,
        "drop_rate": stats.drop_rate if speculated else args.drop_rate,
        "tree_size": stats.tree_size if speculated else None,
        "naive_tree_size": size,
        "capture": getattr(args, "capture", "auto"),
        "captured": stats.captured,
        "naive_captured": naive_stats.captured,
        "prompt": args.prompt,
        "video": args.video,
        "clip": None if args.video else (args.clip or 0),
        "frames": args.frames,
        "sampling": sampling,
        "seed": seed if (sampling or args.selector == "random") else None,
        "new_tokens": sd_t.new_tokens,
        "target_new_tokens": ref_t.new_tokens,
        "max_new_tokens": args.max_new_tokens,
        "naive_mean_accepted_length": (
            naive_stats.mean_accepted_length if naive_speculated else None
        ),
    }
    for name, prefix in _PREFIXES.items():
        record.update(_times(prefix, name, timings, ratio))
    record.update(repeats=args.repeats, device=str(prep.device))
    record.update(target=prep.target_dir, draft=prep.draft_dir)
    return record


# method -> prefix of its fields in the record (``<prefix>_decode_s``, ...)
_PREFIXES = {"target": "target", "compiled": "compiled", "naive_sd": "naive", "specvlm": "specvlm"}


def _times(prefix: str, name: str, timings: dict, ratio: dict) -> dict:
    """One method's times (None where it did not run) and, for the baselines' rivals, its
    speedups in the record."""
    t = timings[name][1] if name in timings else None
    fields = {
        f"{prefix}_decode_s": t and t.decode_s,
        f"{prefix}_e2e_s": t and t.e2e_s,
        f"{prefix}_ttft_s": t and t.ttft_s,
    }
    if name != "specvlm":  # SpecVLM's own are the record's unprefixed ones
        for what in ("decode", "e2e"):
            fields[f"{prefix}_{what}_speedup"] = ratio.get((name, what))
            vs_compiled = ratio.get((name, what + "_vs_compiled"))
            fields[f"{prefix}_{what}_speedup_vs_compiled"] = vs_compiled
    return fields


def write_outputs(args, result: DemoResult) -> list[str]:
    """``--json`` and ``--save-viz``, after the results are printed; returns the paths."""
    written = []
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.record, f, indent=1)
        written.append(args.json)
    stats = result.stats
    if args.save_viz and stats.video_scores is None:
        print(
            f"no figure written to {args.save_viz}: SpecVLM did not score the video in this "
            "call (its policy chose not to prune); --drop-rate 0.9 fixes pruning on",
            file=sys.stderr,
        )
    elif args.save_viz:
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
