"""The options of every ``specvlm`` command.

Kept apart from the commands themselves so that the CLI can build its parser without importing
them: ``demo``, ``bench`` and ``selfcheck`` define the Triton kernels when imported, and the CLI
chooses their backend (``TRITON_INTERPRET`` on a CPU) first.
"""

from __future__ import annotations

import argparse

from specvlm.tools.common import METHODS

DEFAULT_PROMPT = "describe the video ."


def add_selfcheck_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if present)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per op (median)")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", help="a video file (decoded with PyAV); default: a clip")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="which generated clip (without --video): the N-th held-out clip, one the embedded "
        "pair never trained on",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question")
    parser.add_argument(
        "--drop-rate",
        type=float,
        default=0.9,
        help="share of video tokens the draft does not see, in [0, 1)",
    )
    parser.add_argument(
        "--selector", default="two_stage", help="two_stage, attention, uniform or random"
    )
    parser.add_argument(
        "--tree-size",
        type=int,
        default=None,
        help="nodes of the static draft tree (default: 4, a chain, on CPU, where each draft "
        "forward has a fixed cost; 48 on GPU)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8, help="frames sampled from --video")
    _add_pair_arguments(parser)
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if any)")
    parser.add_argument("--dtype", default=None, help="float32, float16 or bfloat16")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default on CPU: 1, fastest for small models)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs of each path, alternating; the fastest counts (default 3)",
    )
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--save-viz", help="write a PNG of the frames, scores and kept tokens")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a few minutes on a CPU")
    parser.add_argument("--out", default="bench-results", help="output directory")
    _add_pair_arguments(parser)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--prompts", type=int, default=None, help="clips per sweep point")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated subset of " + ",".join(METHODS),
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per clip and method, alternating; the fastest counts (default 3)",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default 1)")


def _add_pair_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="target checkpoint directory (default: embedded)")
    parser.add_argument("--draft", help="draft checkpoint directory (default: embedded)")
