"""The options of every ``specvlm`` command.

Kept apart from the commands themselves so that the CLI can build its parser without importing
them: ``demo``, ``bench`` and ``selfcheck`` define the Triton kernels when imported, and the CLI
chooses their backend (``TRITON_INTERPRET`` on a CPU) first.
"""

from __future__ import annotations

import argparse

from specvlm.tools.common import METHODS

DEFAULT_PROMPT = "describe the video ."
DTYPES = ("float32", "float16", "bfloat16")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` with every default shown (``(default: ...)``) except where there is none to
    show (None, a flag) or the help text already says it; descriptions keep their lines."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_selfcheck_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if present)")
    parser.add_argument(
        "--repeats", metavar="N", type=int, default=3, help="timed runs per op (median)"
    )


def add_vllm_args_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--draft", required=True, metavar="CKPT", help="the draft checkpoint (directory or hub id)"
    )
    parser.add_argument(
        "--num-speculative-tokens", metavar="K", type=int, default=4, help="chain length (4)"
    )
    parser.add_argument(
        "--drop-rate", type=float, default=0.9, help="share of video tokens pruned (0.9)"
    )
    parser.add_argument("--mass", type=float, default=0.4, help="Stage I attention mass (0.4)")
    parser.add_argument("--selector", default="two_stage", help="pruning selector (two_stage)")
    parser.add_argument(
        "--draft-sampled",
        action="store_true",
        help="also draft sampled requests (CUDA only; default: greedy requests only)",
    )


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    clip = parser.add_argument_group("the video and the question")
    clip.add_argument(
        "--video",
        metavar="FILE",
        help="a video file (decoded with PyAV); default: a generated held-out clip",
    )
    clip.add_argument(
        "--clip",
        metavar="N",
        type=int,
        default=None,
        help="without --video: which generated clip, the N-th held-out one (one the embedded "
        "pair never trained on; default: 0)",
    )
    clip.add_argument(
        "--frames",
        metavar="N",
        type=int,
        default=8,
        help="frames sampled evenly from --video, or of the generated clip",
    )
    clip.add_argument("--prompt", metavar="TEXT", default=DEFAULT_PROMPT, help="the question")
    run = parser.add_argument_group("SpecVLM and generation")
    run.add_argument(
        "--drop-rate",
        metavar="RATE",
        type=float,
        default=0.9,
        help="share of video tokens the draft does not see, in [0, 1)",
    )
    run.add_argument(
        "--selector",
        default="two_stage",
        help="which video tokens the draft sees: two_stage, attention, uniform or random",
    )
    run.add_argument(
        "--tree-size",
        metavar="N",
        type=int,
        default=None,
        help="nodes of the static draft tree (default: 4, a chain, on CPU, where each draft "
        "forward has a fixed cost; 48 on GPU)",
    )
    run.add_argument(
        "--max-new-tokens", metavar="N", type=int, default=32, help="length limit of the answer"
    )
    _add_sampling_arguments(run, "the random selector")
    _add_pair_arguments(parser)
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if any)")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="default: as saved")
    parser.add_argument(
        "--threads",
        metavar="N",
        type=int,
        default=None,
        help="CPU threads for torch (default on CPU: 1, fastest for small models)",
    )
    parser.add_argument(
        "--repeats",
        metavar="N",
        type=int,
        default=3,
        help="timed runs of each path, alternating; the fastest counts",
    )
    out = parser.add_argument_group("outputs (written after the results are printed)")
    out.add_argument("--json", metavar="FILE", help="write the results as JSON to this file")
    out.add_argument(
        "--save-viz",
        metavar="FILE",
        help="write a figure (.png, .pdf or .svg) of the frames, the target's scores and the "
        "kept tokens",
    )


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="fewer sweep points, clips and tokens (minutes)"
    )
    parser.add_argument("--out", metavar="DIR", default="bench-results", help="output directory")
    _add_pair_arguments(parser)
    parser.add_argument(
        "--prompt", metavar="TEXT", default=DEFAULT_PROMPT, help="the question about each clip"
    )
    parser.add_argument(
        "--prompts",
        metavar="N",
        type=int,
        default=None,
        help="held-out clips per sweep point (default: 2 with --quick, else 4)",
    )
    parser.add_argument(
        "--max-new-tokens",
        metavar="N",
        type=int,
        default=None,
        help="length limit of the answers (default: 24 with --quick, else 48)",
    )
    parser.add_argument(
        "--methods",
        metavar="LIST",
        default=None,
        help="comma-separated subset of " + ", ".join(METHODS) + " (default: all)",
    )
    parser.add_argument(
        "--repeats",
        metavar="N",
        type=int,
        default=3,
        help="timed runs per clip and method, alternating; the fastest counts, all are plotted",
    )
    _add_sampling_arguments(parser, "the random ablation (clip i: seed + i)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if any)")
    parser.add_argument(
        "--threads", metavar="N", type=int, default=None, help="CPU threads (default 1)"
    )


def _add_sampling_arguments(parser, random_use: str) -> None:
    parser.add_argument(
        "--temperature",
        metavar="T",
        type=float,
        default=None,
        help="sample at this temperature (> 0; 0 = greedy); any of --temperature, --top-p, "
        "--top-k samples (temperature 1 unless given); default: greedy, checked for identity",
    )
    parser.add_argument(
        "--top-p", metavar="P", type=float, default=None, help="nucleus sampling, in (0, 1]"
    )
    parser.add_argument(
        "--top-k", metavar="K", type=int, default=None, help="sample among the top k tokens"
    )
    parser.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=None,
        help=f"seed of sampling and of {random_use} (default: 0)",
    )


def _add_pair_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", metavar="DIR", help="target checkpoint directory (default: embedded)"
    )
    parser.add_argument(
        "--draft", metavar="DIR", help="draft checkpoint directory (default: embedded)"
    )
