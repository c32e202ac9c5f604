"""The options of every ``specvlm`` command, and the checks of their values.

Kept apart from the commands themselves so that the CLI can build its parser without importing
them: ``demo``, ``bench`` and ``selfcheck`` define the Triton kernels when imported, and the CLI
chooses their backend (``TRITON_INTERPRET`` on a CPU) first. The checks (``check_*_args``)
import neither torch nor transformers either: the CLI refuses a wrong value with them before
any heavy import (the commands run them again, for callers of their ``main``).
"""

from __future__ import annotations

import argparse

from specvlm.names import SELECTORS
from specvlm.tools.common import (
    CAPTURE,
    METHODS,
    ToolError,
    check_device_name,
    check_output_dir,
    check_output_file,
    check_video_path,
    require_matplotlib,
    sampling_options,
)

DEFAULT_PROMPT = "describe the video ."
DEMO_FRAMES = 32
DTYPES = ("float32", "float16", "bfloat16")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


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
    _add_vllm_draft_options(parser)


# the draft's options inside vLLM (specvlm.vllm_plugin.engine_args) and their defaults, for
# `vllm-args` and `serve` (which refuses any of them changed without --draft)
VLLM_DRAFT_DEFAULTS = dict(
    num_speculative_tokens=4, drop_rate=0.9, mass=0.4, selector="two_stage", draft_sampled=False
)


def _add_vllm_draft_options(parser: argparse.ArgumentParser) -> None:
    defaults = VLLM_DRAFT_DEFAULTS
    parser.add_argument(
        "--num-speculative-tokens",
        metavar="K",
        type=int,
        default=defaults["num_speculative_tokens"],
        help="chain length",
    )
    parser.add_argument(
        "--drop-rate",
        type=float,
        default=defaults["drop_rate"],
        help="share of video tokens pruned",
    )
    parser.add_argument(
        "--mass", type=float, default=defaults["mass"], help="Stage I attention mass"
    )
    parser.add_argument("--selector", default=defaults["selector"], help="pruning selector")
    parser.add_argument(
        "--draft-sampled",
        action="store_true",
        help="also draft sampled requests (CUDA only; default: greedy requests only)",
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="the target: a checkpoint directory, a hub id, or `micro` (the embedded pair's)",
    )
    parser.add_argument(
        "--draft",
        metavar="DRAFT",
        default=None,
        help="the SpecVLM draft (directory, hub id or `micro`); without it, the target alone",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port")
    parser.add_argument(
        "--frames",
        metavar="N",
        type=int,
        default=None,
        help="frames per video, sampled uniformly (default: every frame for `micro`, vLLM's 32 "
        "otherwise)",
    )
    _add_vllm_draft_options(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the server's command instead of running it"
    )


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    _add_demo_clip_arguments(parser.add_argument_group("the video and the question"))
    _add_demo_run_arguments(parser.add_argument_group("SpecVLM and generation"))
    _add_demo_machine_arguments(parser)


def _add_demo_clip_arguments(clip) -> None:
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
        default=DEMO_FRAMES,
        help="frames sampled evenly from --video, or of the generated clip (32: 512 video "
        "tokens of the embedded pair, where pruning pays on a CPU; --frames 8: the short clips "
        "it was trained on, where naive SD is as fast)",
    )
    clip.add_argument("--prompt", metavar="TEXT", default=DEFAULT_PROMPT, help="the question")


def _add_demo_run_arguments(run) -> None:
    run.add_argument(
        "--drop-rate",
        metavar="RATE",
        type=float,
        default=None,
        help="fix SpecVLM's share of video tokens the draft does not see, in [0, 1), and its "
        "tree (--tree-size); default: accelerate()'s automatic policy chooses both per call",
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
        help="nodes of naive SD's static draft tree, and of SpecVLM's when given (or with "
        "--drop-rate); default: 4, a chain, on CPU, where each draft forward has a fixed cost; "
        "48 on GPU",
    )
    _add_capture_argument(run)
    run.add_argument(
        "--no-compile",
        action="store_true",
        help="leave out the compiled target (generate with a static cache and torch.compile; "
        "its compile takes ~15 s on a CPU, untimed)",
    )
    run.add_argument(
        "--max-new-tokens", metavar="N", type=int, default=32, help="length limit of the answer"
    )
    _add_sampling_arguments(run, "the random selector")


def _add_demo_machine_arguments(parser: argparse.ArgumentParser) -> None:
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
    _add_capture_argument(parser)
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


def _check_seed(args, sampling: dict | None, random_used: bool, what: str) -> None:
    if args.seed is not None:
        if args.seed < 0:
            raise ToolError("--seed must be >= 0")
        if sampling is None and not random_used:
            raise ToolError(
                f"--seed seeds sampling (--temperature/--top-p/--top-k) and the random {what}"
            )


def check_demo_args(args) -> dict | None:
    """Every check of ``specvlm demo``'s options that needs no model and no decoding
    (:class:`~specvlm.tools.common.ToolError` on the first failure); returns the sampling
    options (None: greedy). The pair (:func:`~specvlm.tools.common.check_pair`) and the video
    (:func:`~specvlm.tools.video_input.read_video`) are checked after it."""
    if args.selector not in SELECTORS:
        raise ToolError(f"unknown selector {args.selector!r}; choose one of {', '.join(SELECTORS)}")
    if args.drop_rate is not None and not 0.0 <= args.drop_rate < 1.0:
        raise ToolError(f"--drop-rate must be in [0, 1), got {args.drop_rate}")
    if args.max_new_tokens < 1:
        raise ToolError("--max-new-tokens must be >= 1")
    if args.repeats < 1:
        raise ToolError("--repeats must be >= 1")
    if args.frames < 1:
        raise ToolError("--frames must be >= 1")
    if args.tree_size is not None and not 1 <= args.tree_size <= 256:
        raise ToolError("--tree-size must be in [1, 256]")
    capture_option(args)
    if args.clip is not None:
        if args.video is not None:
            raise ToolError("--clip picks a generated clip: it does nothing with --video")
        if args.clip < 0:
            raise ToolError("--clip must be >= 0")
    sampling = sampling_options(args)
    _check_seed(
        args,
        sampling,
        args.selector == "random",
        f"selector: it does nothing in greedy decoding with --selector {args.selector}",
    )
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.save_viz is not None:
        check_output_file(args.save_viz, "--save-viz", FIGURE_SUFFIXES)
        require_matplotlib("--save-viz")
    if args.video is not None:
        check_video_path(args.video)
    return sampling


def check_bench_args(args) -> tuple[tuple[str, ...], dict | None, bool | str]:
    """Every check of ``specvlm bench``'s options that needs no model
    (:class:`~specvlm.tools.common.ToolError` on the first failure); returns the methods, the
    sampling options (None: greedy) and ``accelerate``'s ``capture=`` (:func:`capture_option`)."""
    methods = METHODS
    if args.methods is not None:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ToolError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.repeats < 1:
        raise ToolError("--repeats must be >= 1")
    if args.prompts is not None and args.prompts < 1:
        raise ToolError(f"--prompts must be >= 1, got {args.prompts}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ToolError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    sampling = sampling_options(args)
    _check_seed(
        args,
        sampling,
        "random" in methods,
        "ablation: it does nothing in greedy decoding without the random method",
    )
    check_output_dir(args.out, "--out")
    require_matplotlib("specvlm bench (its plots)")
    return methods, sampling, capture_option(args)


def capture_option(args) -> bool | str:
    """``--capture`` (``auto``, ``on``, ``off``) as ``specvlm.accelerate``'s ``capture=``
    (``"auto"``, ``True``, ``False``); :class:`ToolError` for another value (argparse refuses
    it first; a caller of ``main`` may not)."""
    value = getattr(args, "capture", "auto")
    if value not in CAPTURE:
        raise ToolError(f"--capture must be one of {', '.join(CAPTURE)}, got {value!r}")
    return CAPTURE[value]


def _add_capture_argument(parser) -> None:
    parser.add_argument(
        "--capture",
        choices=tuple(CAPTURE),
        default="auto",
        help="how every SpecVLM decoder's draft steps run (accelerate's capture=): auto "
        "(captured where it pays), on (always captured), off (eager); the same for SpecVLM "
        "and naive SD",
    )


def check_selfcheck_args(args) -> None:
    """``specvlm selfcheck``'s options, spelled right (whether the device is there is checked
    with torch, after)."""
    check_device_name(args.device)
    if args.repeats < 1:
        raise ToolError("--repeats must be >= 1")
