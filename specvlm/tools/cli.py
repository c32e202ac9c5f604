"""Command-line entry point: ``specvlm <command>``.

Commands: ``demo`` (target alone vs SpecVLM on one video, with the embedded micro pair or any
supported checkpoint pair), ``bench`` (every method on the same clips, sweeps, JSON/CSV/plots),
``selfcheck`` (every kernel against its PyTorch reference, with timings).
"""

from __future__ import annotations

import argparse
import os
import sys

from specvlm.tools import arguments


def _prepare_backend(device: str) -> None:
    """Triton reads TRITON_INTERPRET when a kernel is defined: set it before importing them."""
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _parser() -> argparse.ArgumentParser:
    """Every command's options, from :mod:`specvlm.tools.arguments` alone: the commands
    themselves (which define the Triton kernels) are imported once one has been chosen."""
    parser = argparse.ArgumentParser(prog="specvlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("selfcheck", help="run every kernel against its PyTorch reference")
    arguments.add_selfcheck_arguments(check)
    demo = sub.add_parser("demo", help="target alone vs SpecVLM on one video")
    arguments.add_demo_arguments(demo)
    bench = sub.add_parser("bench", help="every method on the same clips, with sweeps")
    arguments.add_bench_arguments(bench)
    return parser


def _selfcheck(args) -> int:
    from specvlm.tools.common import ToolError, parse_device

    try:
        device = parse_device(args.device)
        if args.repeats < 1:
            raise ToolError("--repeats must be >= 1")
    except ToolError as err:
        print(f"specvlm: error: {err}", file=sys.stderr)
        return 2
    _prepare_backend(device.type)
    from specvlm.tools.selfcheck import run_selfcheck

    return 0 if run_selfcheck(device, repeats=args.repeats) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from specvlm.tools import demo

        return demo.main(args)
    if args.command == "bench":
        from specvlm.tools import bench

        return bench.main(args)
    return _selfcheck(args)


if __name__ == "__main__":
    sys.exit(main())
