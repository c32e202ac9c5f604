"""Run one of the report's Python steps in a process of its own, so the report's deadline can
end it whatever it is doing (a hung CUDA call in the report's own process could not be
interrupted):

    python -m specvlm.tools.gpu_report.child STEP --out DIR [--tiny]

The step's ``run(out, tiny)`` returns ``(detail, files)``, written to ``STEP.result.json``; an
exception goes to ``STEP_error.txt`` and the exit status is 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

MODULES = {"env": "environment", "e2e": "e2e", "decoders": "decoders", "perf_model": "perf"}


def step_device(tiny: bool):
    """The device a step measures on: the current CUDA device, or the CPU with ``--tiny`` (or
    without CUDA)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=sorted(MODULES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    try:
        module = importlib.import_module(f"specvlm.tools.gpu_report.{MODULES[args.step]}")
        detail, files = module.run(args.out, args.tiny)
    except Exception:  # noqa: BLE001 (recorded for the page)
        text = traceback.format_exc()
        (args.out / f"{args.step}_error.txt").write_text(text)
        print(text, file=sys.stderr)
        return 1
    result = {"detail": detail, "files": files}
    (args.out / f"{args.step}.result.json").write_text(json.dumps(result))
    print(f"{args.step}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
