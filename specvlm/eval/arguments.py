"""``specvlm eval``'s options and their checks (no torch, no transformers: a wrong option or a
missing or malformed dataset is refused in one line before anything heavy loads)."""

from __future__ import annotations

import argparse
import importlib.util
import os

from specvlm.eval.benchmarks import BENCHMARKS
from specvlm.eval.samples import ANSWER_STYLES
from specvlm.names import SELECTORS
from specvlm.tools.arguments import DTYPES
from specvlm.tools.common import (
    CAPTURE,
    ToolError,
    check_output_dir,
    require_matplotlib,
    sampling_options,
)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("the benchmark")
    what.add_argument(
        "--benchmark",
        required=True,
        choices=tuple(BENCHMARKS),
        help="a published benchmark, or micro (the embedded pair's held-out clips, no download)",
    )
    what.add_argument(
        "--data",
        metavar="DIR",
        help="the benchmark's files as the dataset ships them (docs/eval.md says which); "
        "not for micro",
    )
    what.add_argument(
        "--out", metavar="DIR", default=None, help="output directory (default: eval-results/NAME)"
    )
    what.add_argument("--limit", metavar="N", type=int, help="samples (default: the protocol's)")
    what.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=42,
        help="seed of the sample selection (the protocol's shuffle) and of sampling",
    )
    what.add_argument("--frames", metavar="N", type=int, help="frames per video (protocol's)")
    what.add_argument(
        "--max-new-tokens", metavar="N", type=int, help="answer length limit (protocol's)"
    )
    what.add_argument(
        "--answer-style",
        choices=tuple(ANSWER_STYLES),
        default="explain",
        help="multiple choice: the letter then the reasons (explain), or the letter alone",
    )
    _add_specvlm_arguments(parser.add_argument_group("SpecVLM and generation"))
    machine = parser.add_argument_group("machine and outputs")
    machine.add_argument("--target", metavar="DIR", help="target checkpoint (default: embedded)")
    machine.add_argument("--draft", metavar="DIR", help="draft checkpoint (default: embedded)")
    machine.add_argument(
        "--device",
        default=None,
        help="cpu, cuda[:N], or auto: both models spread over every GPU (device_map='auto', as "
        "a 72B target needs; needs accelerate); default: cuda if any",
    )
    machine.add_argument("--dtype", default=None, choices=DTYPES, help="default: as saved")
    machine.add_argument("--threads", metavar="N", type=int, help="CPU threads (default 1)")
    machine.add_argument(
        "--restart", action="store_true", help="discard the samples already in --out"
    )
    machine.add_argument("--no-progress", action="store_true", help="no progress bar")
    machine.add_argument("--no-plot", action="store_true", help="no plot.png (no matplotlib)")


def _add_specvlm_arguments(group) -> None:
    group.add_argument(
        "--drop-rate",
        metavar="RATE",
        default=None,
        help="share of video tokens the draft does not see, in [0, 1), or `auto` (the automatic "
        "policy chooses it and the tree per call); default: the protocol's (0.9)",
    )
    group.add_argument(
        "--selector", default="two_stage", choices=SELECTORS, help="which tokens the draft sees"
    )
    group.add_argument(
        "--tree-size", metavar="N", type=int, help="nodes of the draft tree (default: 48)"
    )
    group.add_argument("--capture", choices=tuple(CAPTURE), default="auto", help="capture=")
    # --overlap takes --capture's values
    group.add_argument("--overlap", choices=tuple(CAPTURE), default="off", help="overlap=")
    group.add_argument("--temperature", metavar="T", type=float, help="sample (default: greedy)")
    group.add_argument("--top-p", metavar="P", type=float, help="nucleus sampling, in (0, 1]")
    group.add_argument("--top-k", metavar="K", type=int, help="sample among the top k tokens")


def drop_rate_option(value: str | None, protocol: float, name: str = "--drop-rate") -> float | None:
    """``--drop-rate`` as a float (the protocol's when not given), or None for ``auto``."""
    if value is None:
        return protocol
    if value == "auto":
        return None
    try:
        rate = float(value)
    except ValueError:
        raise ToolError(f"{name} must be a number in [0, 1) or auto, got {value!r}") from None
    if not 0.0 <= rate < 1.0:
        raise ToolError(f"{name} must be in [0, 1), got {rate}")
    return rate


def check_specvlm_options(
    drop_rate, tree_size, selector, dtype, protocol_rate: float, cli: bool = True
) -> float | None:
    """The SpecVLM options ``specvlm eval`` and the lmms-eval model share (named as options
    with ``cli``, else as model arguments); returns the drop rate (None: the automatic
    policy)."""

    def name(option: str) -> str:
        return f"--{option.replace('_', '-')}" if cli else option

    rate = drop_rate_option(drop_rate, protocol_rate, name("drop_rate"))
    if tree_size is not None and not 1 <= tree_size <= 256:
        raise ToolError(f"{name('tree_size')} must be in [1, 256], got {tree_size}")
    if rate is None and tree_size is not None:
        raise ToolError(
            f"{name('tree_size')} fixes the tree: give a {name('drop_rate')} too, not auto"
        )
    if selector not in SELECTORS:
        raise ToolError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ToolError(f"{name('dtype')} must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return rate


def check_eval_args(args) -> dict | None:
    """Every check of the options alone (:class:`ToolError` on the first); returns the sampling
    options (None: greedy). The dataset is checked by :func:`specvlm.eval.benchmarks.samples`."""
    benchmark = BENCHMARKS[args.benchmark]
    for option in ("limit", "frames", "max_new_tokens"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ToolError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if args.seed < 0:
        raise ToolError("--seed must be >= 0")
    check_specvlm_options(
        args.drop_rate, args.tree_size, args.selector, args.dtype, benchmark.protocol.drop_rate
    )
    if benchmark.files and args.data is None:
        raise ToolError(f"--benchmark {args.benchmark} needs --data DIR: {benchmark.source}")
    if not benchmark.files and args.data is not None:
        raise ToolError(f"--benchmark {args.benchmark} reads no files: leave out --data")
    if args.data is not None and not os.path.isdir(args.data):
        raise ToolError(f"--data {args.data} is not a directory")
    if args.device == "auto" and importlib.util.find_spec("accelerate") is None:
        raise ToolError('--device auto needs accelerate: pip install "specvlm[hf]"')
    check_output_dir(output_dir(args), "--out")
    if not args.no_plot:
        require_matplotlib("specvlm eval's plot (or --no-plot)")
    return sampling_options(args)


def output_dir(args) -> str:
    return args.out or os.path.join("eval-results", args.benchmark)
