"""``specvlm eval``: a benchmark with the target alone and with SpecVLM, sample by sample.

Order of work: the options, the checkpoints and the dataset (every chosen sample's annotation
and video file) are checked first, without torch; then the output directory (a run resumes
only with the same settings); then the models load and the samples run
(:mod:`specvlm.eval.runner`). The exit code is 1 when any greedy answer differs from the
target's, 2 for a bad option or dataset, else 0.
"""

from __future__ import annotations

import os
import sys

from specvlm.eval.arguments import check_eval_args, drop_rate_option, output_dir
from specvlm.eval.benchmarks import BENCHMARKS, benchmark_samples
from specvlm.tools.common import CAPTURE, ToolError, check_pair, describe_sampling


def check(args):
    """Every check that needs no torch; returns ``(samples, sampling options or None)``."""
    sampling = check_eval_args(args)
    check_pair(_single_device(args))
    samples = benchmark_samples(
        args.benchmark, args.data, args.answer_style, args.frames, args.limit, args.seed
    )
    return samples, sampling


def _single_device(args):
    """``args`` with ``--device auto`` read as the default device (CUDA), for the checks and
    the thread setting of one device."""
    if args.device != "auto":
        return args
    from copy import copy

    single = copy(args)
    single.device = None
    return single


def decoder_options(args) -> dict:
    """``specvlm.accelerate``'s keywords for the run's options."""
    protocol = BENCHMARKS[args.benchmark].protocol
    options = dict(
        selector=args.selector,
        seed=args.seed,
        capture=CAPTURE[args.capture],
        overlap=CAPTURE[args.overlap],  # the same auto / on / off
    )
    rate = drop_rate_option(args.drop_rate, protocol.drop_rate)
    if rate is not None:
        options["drop_rate"] = rate
    if args.tree_size is not None:
        from specvlm.trees import tree_of_size

        options["tree"] = tree_of_size(args.tree_size)
    return options


def _describe(options: dict, tree_size: int | None) -> str:
    rate = options.get("drop_rate")
    if rate is None:
        return "automatic policy"
    tree = f"{tree_size}-node tree" if tree_size else "default tree"
    return f"drop rate {rate:g}, {options['selector']}, {tree}"


def settings(args, target_dir: str, draft_dir: str, sampling, device) -> dict:
    """run.json: what makes two runs' samples comparable (a run resumes only with the same;
    ``--limit`` may change: a longer run extends a shorter one)."""
    protocol = BENCHMARKS[args.benchmark].protocol
    return {
        "benchmark": args.benchmark,
        "data": os.path.abspath(args.data) if args.data else None,
        "frames": args.frames or protocol.frames,
        "max_new_tokens": args.max_new_tokens or protocol.max_new_tokens,
        "answer_style": args.answer_style,
        "decoding": describe_sampling(sampling, args.seed),
        "sampling": sampling,
        **decoder_settings(args, target_dir, draft_dir, device),
    }


def decoder_settings(args, target_dir: str, draft_dir: str, device) -> dict:
    """The pair, SpecVLM's options and the hardware, as every run records them (``specvlm
    eval``'s run.json, and the lmms-eval model's: :mod:`specvlm.eval.lmms_model`)."""
    from specvlm.tools.common import hardware

    return {
        "target": os.path.abspath(target_dir),
        "draft": os.path.abspath(draft_dir),
        "seed": args.seed,
        "specvlm": _describe(decoder_options(args), args.tree_size),
        "drop_rate": args.drop_rate,
        "selector": args.selector,
        "tree_size": args.tree_size,
        "capture": args.capture,
        "overlap": args.overlap,
        "device": "auto (device_map)" if args.device == "auto" else str(device),
        "dtype": args.dtype,
        "hardware": hardware(device),
    }


def run(args, samples, sampling) -> dict:
    """Load, run and write (the checks of :func:`check` done); returns the summary."""
    import torch

    from specvlm.eval.runner import EvalRun, run_eval
    from specvlm.tools.common import checkpoint_pair

    target_dir, draft_dir, device = checkpoint_pair(_single_device(args))
    device_map = "auto" if args.device == "auto" else None
    if device_map and device.type != "cuda":
        raise ToolError("--device auto spreads the models over GPUs: CUDA is not available")
    protocol = BENCHMARKS[args.benchmark].protocol
    eval_run = EvalRun(
        samples=samples,
        out_dir=output_dir(args),
        settings=settings(args, target_dir, draft_dir, sampling, device),
        target_dir=target_dir,
        draft_dir=draft_dir,
        device=device,
        frames=args.frames or protocol.frames,
        max_new_tokens=args.max_new_tokens or protocol.max_new_tokens,
        decoder_options=decoder_options(args),
        sampling=sampling,
        seed=args.seed,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        restart=args.restart,
        progress=not args.no_progress,
        plot=not args.no_plot,
        published=BENCHMARKS[args.benchmark].published,
        device_map=device_map,
    )
    return run_eval(eval_run)


def main(args, checked=None) -> int:
    """``specvlm eval``; ``checked``: :func:`check`'s result when the caller ran it."""
    try:
        samples, sampling = checked if checked is not None else check(args)
        summary = run(args, samples, sampling)
    except ToolError as err:
        print(f"specvlm eval: error: {err}", file=sys.stderr)
        return 2
    from specvlm.eval.results import table

    print(table(summary))
    print(f"wrote {output_dir(args)}/: samples.jsonl, summary.json, table.md", file=sys.stderr)
    if summary["failed"]:
        print(
            f"specvlm eval: {summary['failed']} samples failed (first: "
            f"{summary['first_failure']}); the same command runs them again",
            file=sys.stderr,
        )
        return 1
    return 1 if summary["all_identical"] is False else 0
