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
from pathlib import Path

EMBEDDED = Path(__file__).resolve().parent.parent / "assets" / "micro"
DEFAULT_PROMPT = "describe the video ."


class DemoError(ValueError):
    """A bad argument or input: reported in one line, exit code 2."""


def add_arguments(parser) -> None:
    parser.add_argument("--video", help="a video file (decoded with PyAV); default: a clip")
    parser.add_argument("--seed", type=int, default=0, help="which generated clip (without "
                        "--video): the N-th held-out clip, one the embedded pair never trained "
                        "on")  # fmt: skip
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question")
    parser.add_argument("--drop-rate", type=float, default=0.9, help="share of video tokens "
                        "the draft does not see, in [0, 1)")  # fmt: skip
    parser.add_argument("--selector", default="two_stage",
                        help="two_stage, attention, uniform or random")  # fmt: skip
    parser.add_argument("--tree-size", type=int, default=None,
                        help="nodes of the static draft tree (default: 4, a chain, on "
                        "CPU, where each draft forward has a fixed cost; 48 on GPU)")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8, help="frames sampled from --video")
    parser.add_argument("--target", help="target checkpoint directory (default: embedded)")
    parser.add_argument("--draft", help="draft checkpoint directory (default: embedded)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if any)")
    parser.add_argument("--dtype", default=None, help="float32, float16 or bfloat16")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch "
                        "(default on CPU: 1, fastest for small models)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path, "
                        "alternating; the fastest counts (default 3)")  # fmt: skip
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--save-viz", help="write a PNG of the frames, scores and kept tokens")


def _progress(step: int, total: int, what: str) -> None:
    print(f"[{step}/{total}] {what}", file=sys.stderr, flush=True)


def _check_args(args) -> None:
    from specvlm.selectors import NAMES

    if args.selector not in NAMES:
        raise DemoError(f"unknown selector {args.selector!r}; choose one of {', '.join(NAMES)}")
    if not 0.0 <= args.drop_rate < 1.0:
        raise DemoError(f"--drop-rate must be in [0, 1), got {args.drop_rate}")
    if args.max_new_tokens < 1:
        raise DemoError("--max-new-tokens must be >= 1")
    if args.seed < 0:
        raise DemoError("--seed must be >= 0")
    if args.repeats < 1:
        raise DemoError("--repeats must be >= 1")
    if args.frames < 1:
        raise DemoError("--frames must be >= 1")
    if args.tree_size is not None and not 1 <= args.tree_size <= 256:
        raise DemoError("--tree-size must be in [1, 256]")
    if args.dtype not in (None, "float32", "float16", "bfloat16"):
        raise DemoError(f"--dtype must be float32, float16 or bfloat16, got {args.dtype!r}")
    if args.video is not None and not os.path.isfile(args.video):
        raise DemoError(f"video file not found: {args.video}")


def _checkpoint(path: str, role: str) -> str:
    from specvlm.families import FAMILIES

    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        if role.startswith("embedded"):
            raise DemoError(
                f"the embedded micro pair is missing ({path}); build it with "
                "`python scripts/train_micro.py --out specvlm/assets/micro`"
            )
        raise DemoError(f"--{role} {path} is not a checkpoint directory (no config.json)")
    with open(cfg_path) as f:
        model_type = json.load(f).get("model_type")
    if model_type not in FAMILIES:
        names = ", ".join(f"{f.display_name} ({t})" for t, f in FAMILIES.items())
        raise DemoError(f"--{role} {path} is a {model_type!r} model; supported: {names}")
    return path


def _device(name: str | None):
    import torch

    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise DemoError(f"bad --device {name!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DemoError("--device cuda given but CUDA is not available")
    return device


def set_threads(device, threads: int | None) -> None:
    """On the CPU, one intra-op thread unless told otherwise: small models spend their time in
    per-op overhead, which more threads only increase (both methods run with the same setting)."""
    import torch

    if threads is not None:
        if threads < 1:
            raise DemoError("--threads must be >= 1")
        torch.set_num_threads(threads)
    elif device.type == "cpu":
        torch.set_num_threads(1)


def checkpoint_pair(args):
    """``(target_dir, draft_dir, device)`` from ``--target/--draft/--device/--threads`` (the
    embedded pair by default); :class:`DemoError` for a bad combination or directory."""
    if (args.target is None) != (args.draft is None):
        raise DemoError("give both --target and --draft, or neither (the embedded pair)")
    target_dir = _checkpoint(args.target or str(EMBEDDED / "target"),
                             "target" if args.target else "embedded target")  # fmt: skip
    draft_dir = _checkpoint(args.draft or str(EMBEDDED / "draft"),
                            "draft" if args.draft else "embedded draft")  # fmt: skip
    device = _device(args.device)
    set_threads(device, args.threads)
    return target_dir, draft_dir, device


def run(args) -> dict:
    """Run the demo; returns the result record (also printed, and written with ``--json``)."""
    _check_args(args)
    target_dir, draft_dir, device = checkpoint_pair(args)
    steps = 5

    _progress(1, steps, f"loading {target_dir} and {draft_dir}")
    import torch
    from transformers import AutoModelForImageTextToText

    import specvlm
    from specvlm.tools.timing import cuda_devices, time_alternately
    from specvlm.tools.video_input import InputError, VideoPrompter, read_video, sample_frames
    from specvlm.trees import tree_of_size

    dtype = getattr(torch, args.dtype) if args.dtype else None
    kw = {"dtype": dtype} if dtype is not None else {}
    target = AutoModelForImageTextToText.from_pretrained(target_dir, **kw).to(device).eval()
    draft = AutoModelForImageTextToText.from_pretrained(draft_dir, **kw).to(device).eval()
    try:
        prompter = VideoPrompter(target_dir, target.config)
    except (InputError, OSError) as err:
        raise DemoError(str(err)) from err

    _progress(2, steps, "preparing the clip")
    try:
        if args.video:
            video = sample_frames(read_video(args.video), args.frames)
        else:
            from specvlm.micro.data import held_out_clip

            video = held_out_clip(args.seed)
        inputs = prompter(video, args.prompt)
    except InputError as err:
        raise DemoError(str(err)) from err
    inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
    if "pixel_values_videos" in inputs and dtype is not None:
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(dtype)

    size = args.tree_size or (4 if device.type == "cpu" else 48)
    tree = tree_of_size(size)
    sd = specvlm.accelerate((target, draft), drop_rate=args.drop_rate, selector=args.selector,
                            tree=tree)  # fmt: skip
    devices = cuda_devices(target, draft)
    gen = dict(max_new_tokens=args.max_new_tokens)

    _progress(3, steps, "warming up both paths")
    with torch.no_grad():
        target.generate(**inputs, do_sample=False, max_new_tokens=2)
        sd.generate(**inputs, max_new_tokens=2)

    _progress(4, steps, f"timing the target alone and SpecVLM (draft on "
              f"{1 - args.drop_rate:.0%} of the video tokens), {args.repeats} runs each")
    with torch.no_grad():
        timings = time_alternately({
            "target": lambda s: target.generate(**inputs, do_sample=False, streamer=s, **gen),
            "specvlm": lambda s: sd.generate(**inputs, streamer=s, **gen),
        }, args.repeats, devices)  # fmt: skip
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
        "decode_speedup": ref_t.decode_s / sd_t.decode_s if sd_t.decode_s > 0 else None,
        "e2e_speedup": ref_t.e2e_s / sd_t.e2e_s if sd_t.e2e_s > 0 else None,
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
        from specvlm.tools.viz import save_pruning_figure

        title = f"{args.prompt}  ->  {record['text']}"
        save_pruning_figure(video, stats.video_grid, stats.video_scores, stats.kept_indices,
                            args.save_viz, title=title)  # fmt: skip
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
    print(f"decode speedup: {fmt(rec['decode_speedup'])}   end-to-end: {fmt(rec['e2e_speedup'])}"
          f"   ({rec['new_tokens']} tokens on {rec['device']})")  # fmt: skip
    ttft, ref_ttft = 1000 * rec["specvlm_ttft_s"], 1000 * rec["target_ttft_s"]
    print(f"time to first token: {ttft:.0f} ms (target alone {ref_ttft:.0f} ms; SpecVLM's "
          "includes scoring, pruning and the draft prefill)")  # fmt: skip


def main(args) -> int:
    start = time.perf_counter()
    try:
        rec = run(args)
    except DemoError as err:
        print(f"specvlm demo: error: {err}", file=sys.stderr)
        return 2
    print_record(rec)
    print(f"(demo took {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0 if rec["identical"] else 1
