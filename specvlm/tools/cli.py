"""Command-line entry point: ``specvlm <command>``.

Commands: ``demo`` (target alone vs SpecVLM on one video, with the embedded micro pair or any
supported checkpoint pair), ``bench`` (every method on the same clips, sweeps, JSON/CSV/plots),
``selfcheck`` (every kernel against its PyTorch reference, with timings).
"""

from __future__ import annotations

import argparse
import os
import sys


def _prepare_backend(device: str) -> None:
    """Triton reads TRITON_INTERPRET when a kernel is defined: set it before importing them."""
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="specvlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("selfcheck", help="run every kernel against its PyTorch reference")
    check.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if present)")
    check.add_argument("--repeats", type=int, default=3, help="timed runs per op (median)")
    from specvlm.tools import demo

    demo_parser = sub.add_parser("demo", help="target alone vs SpecVLM on one video")
    demo.add_arguments(demo_parser)
    from specvlm.tools import bench

    bench_parser = sub.add_parser("bench", help="every method on the same clips, with sweeps")
    bench.add_arguments(bench_parser)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.main(args)
    if args.command == "bench":
        return bench.main(args)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        print(f"specvlm: error: bad --device {args.device!r}: {err}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("specvlm: error: --device cuda given but CUDA is not available", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print("specvlm: error: --repeats must be >= 1", file=sys.stderr)
        return 2
    _prepare_backend(device.type)
    from specvlm.tools.selfcheck import run_selfcheck

    return 0 if run_selfcheck(device, repeats=args.repeats) else 1


if __name__ == "__main__":
    sys.exit(main())
