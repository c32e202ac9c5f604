"""Command-line entry point: ``specvlm <command>`` (``demo``, ``bench``, ``eval``,
``selfcheck``, ``serve``, ``vllm-args``).

The parser is built from :mod:`specvlm.tools.arguments` alone; a command's module (which
defines the Triton kernels) is imported once the command is chosen and its backend set.

Every argument is checked first, with light imports only (no torch, no transformers): options
in range, paths, checkpoint directories, the spelling of ``--device``, and ``--video`` read
(PyAV and numpy). A wrong argument is refused in one line in a fraction of a second; torch,
transformers and the command's module load only after the checks pass.
"""

from __future__ import annotations

import argparse
import os
import sys

from specvlm.eval.arguments import add_eval_arguments
from specvlm.tools import arguments
from specvlm.tools.common import ToolError, check_pair

DESCRIPTION = """\
SpecVLM: lossless speculative decoding for video LLMs. A small draft model, shown only the
video tokens the target attends to, proposes a token tree; the target verifies it in one
forward pass. The output is the target's own (greedy: token for token; sampling: the same
distribution)."""

EPILOG = """\
examples:
  specvlm demo                             the embedded micro pair on a generated clip
  specvlm demo --video clip.mp4 --prompt "what happens ?" --save-viz viz.png
  specvlm demo --temperature 0.7 --seed 1  sampling instead of greedy decoding
  specvlm bench --quick --out bench-results
  specvlm eval --benchmark micro           the target alone vs SpecVLM on the embedded clips
  specvlm eval --benchmark mvbench --data MVBench --target T --draft D   a published benchmark
  specvlm selfcheck                        every kernel against its PyTorch reference
  specvlm serve micro --draft micro        vLLM's OpenAI server, the embedded pair
  eval "vllm serve TARGET $(specvlm vllm-args --draft DRAFT)"   vLLM with a SpecVLM draft

Each command's options: specvlm COMMAND --help"""

COMMANDS = {
    "demo": (
        "the target alone vs SpecVLM on one video",
        "One video (a generated held-out clip, or --video), one question: the target's own\n"
        "generate against SpecVLM, side by side: the answer, whether it is the target's, tau,\n"
        "the video tokens the draft saw, and the decode and end-to-end speedups.",
        arguments.add_demo_arguments,
    ),
    "bench": (
        "every method on the same clips, with sweeps",
        "Every method (the target's generate, naive speculative decoding, transformers'\n"
        "assisted generation, SpecVLM and its selector ablations) on the same held-out clips,\n"
        "over sweeps of drop rate, frames and tree size; prints a summary table, then writes\n"
        "results.json, results.csv and plots to --out.",
        arguments.add_bench_arguments,
    ),
    "eval": (
        "a benchmark, the target alone vs SpecVLM, sample by sample",
        "A published benchmark (read offline from --data, the dataset's own files) or the\n"
        "embedded clips, each sample answered by the target alone and by SpecVLM, with the\n"
        "paper's protocol by default; writes samples.jsonl, summary.json, table.md and\n"
        "plot.png to --out, and resumes there after an interruption. docs/eval.md has the\n"
        "command per benchmark.",
        add_eval_arguments,
    ),
    "selfcheck": (
        "run every kernel against its PyTorch reference",
        "Every kernel on small random inputs against its fp64 PyTorch reference, with timings.",
        arguments.add_selfcheck_arguments,
    ),
    "serve": (
        "serve a model over HTTP (vLLM's OpenAI API), with or without a SpecVLM draft",
        "vLLM's OpenAI-compatible server for MODEL, with the SpecVLM draft --draft (without it,\n"
        "the target alone). Every option vLLM's server takes may follow (--max-model-len,\n"
        "--allowed-local-media-path, ...). docs/serving.md has the worked commands.\n"
        "  specvlm serve micro --draft micro      the embedded pair on 127.0.0.1:8000",
        arguments.add_serve_arguments,
    ),
    "vllm-args": (
        "print the vllm serve flags that add a SpecVLM draft",
        "The flags for `vllm serve TARGET ...` that serve TARGET with the SpecVLM draft\n"
        "(docs/serving.md), shell-quoted on one line:\n"
        '  eval "vllm serve TARGET $(specvlm vllm-args --draft DRAFT)"',
        arguments.add_vllm_args_arguments,
    ),
}


def _prepare_backend(device: str) -> None:
    """Triton reads TRITON_INTERPRET when a kernel is defined: set it before importing them."""
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _parser() -> argparse.ArgumentParser:
    """The top-level parser (see :func:`_parsers`)."""
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's, from :mod:`specvlm.tools.arguments` alone: the
    commands themselves (which define the Triton kernels) are imported once one is chosen."""
    parser = argparse.ArgumentParser(
        prog="specvlm",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {}
    for name, (summary, description, add_arguments) in COMMANDS.items():
        command = sub.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=arguments.HelpFormatter,
        )
        add_arguments(command)
        commands[name] = command
    return parser, commands


def _check(args):
    """Every check of ``args`` that needs no torch (:class:`ToolError` on the first failure);
    returns what the command reuses (``--video``'s frames for the demo, the samples and the
    sampling options for eval, else None)."""
    if args.command == "demo":
        arguments.check_demo_args(args)
        check_pair(args)
        if args.video is None:
            return None
        from specvlm.tools.video_input import read_video  # numpy and PyAV, no torch

        return read_video(args.video, args.frames)
    if args.command == "bench":
        arguments.check_bench_args(args)
        check_pair(args)
    elif args.command == "eval":
        from specvlm.eval.command import check  # light: no torch

        return check(args)
    elif args.command == "selfcheck":
        arguments.check_selfcheck_args(args)
    else:
        from specvlm.vllm_plugin import engine_args  # light: no vLLM, no torch

        try:
            engine_args(**_vllm_options(args))
        except ValueError as err:
            raise ToolError(str(err)) from err
    return None


def _selfcheck(args) -> int:
    from specvlm.tools.common import parse_device

    try:
        device = parse_device(args.device)
    except ToolError as err:
        print(f"specvlm selfcheck: error: {err}", file=sys.stderr)
        return 2
    _prepare_backend(device.type)
    from specvlm.tools.selfcheck import run_selfcheck

    return 0 if run_selfcheck(device, repeats=args.repeats) else 1


def _vllm_options(args) -> dict:
    return dict(
        draft=args.draft,
        num_speculative_tokens=args.num_speculative_tokens,
        drop_rate=args.drop_rate,
        mass=args.mass,
        selector=args.selector,
        draft_sampled=args.draft_sampled,
    )


def _vllm_args(args) -> int:
    import shlex

    from specvlm.vllm_plugin import serve_flags

    flags = serve_flags(**_vllm_options(args))  # checked by _check
    print(" ".join(shlex.quote(flag) for flag in flags))
    return 0


def _serve(args, passthrough: list[str]) -> int:
    from specvlm.tools import serve  # light: no vLLM, no torch

    try:
        serve.check_serve_args(args)
        return serve.main(args, passthrough)
    except ToolError as err:
        print(f"specvlm serve: error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parsers()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "serve":  # the rest is vLLM's server options
        return _serve(args, unknown)
    if unknown:  # the command's own usage, not the top-level one
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        checked = _check(args)
    except ToolError as err:
        print(f"specvlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    if args.command == "demo":
        from specvlm.tools import demo

        return demo.main(args, frames=checked)
    if args.command == "bench":
        from specvlm.tools import bench

        return bench.main(args)
    if args.command == "eval":
        from specvlm.eval import command

        return command.main(args, checked)
    if args.command == "vllm-args":
        return _vllm_args(args)
    return _selfcheck(args)


if __name__ == "__main__":
    sys.exit(main())
