"""What the tools share: the one-line error, checkpoint directories and the pair they hold,
``--device`` and ``--threads``, inputs on a device, and speedup ratios.

Nothing here defines the Triton kernels (``specvlm_kernels``): the CLI imports this module
before it has chosen their backend.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from specvlm.families import FAMILIES

EMBEDDED = Path(__file__).resolve().parent.parent / "assets" / "micro"

# Every generation method the tools compare; the target's own greedy ``generate`` comes first
# (the reference output and timing). What each one runs: ``specvlm.tools.comparison``.
METHODS = (
    "autoregressive",
    "naive_sd",
    "assisted_generation",
    "specvlm",
    "attention",
    "uniform",
    "random",
)


class ToolError(ValueError):
    """A bad argument or input: reported in one line, without a traceback, exit code 2."""


def check_checkpoint(path: str, role: str) -> str:
    """``path`` if it is a checkpoint directory of a supported family, else :class:`ToolError`
    (``role``: ``"target"``, ``"draft"``, ``"embedded target"`` or ``"embedded draft"``)."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        if role.startswith("embedded"):
            raise ToolError(
                f"the embedded micro pair is missing ({path}); build it with "
                "`python scripts/train_micro.py --out specvlm/assets/micro`"
            )
        raise ToolError(f"--{role} {path} is not a checkpoint directory (no config.json)")
    with open(cfg_path) as f:
        model_type = json.load(f).get("model_type")
    if model_type not in FAMILIES:
        names = ", ".join(f"{f.display_name} ({t})" for t, f in FAMILIES.items())
        raise ToolError(f"--{role} {path} is a {model_type!r} model; supported: {names}")
    return path


def parse_device(name: str | None) -> torch.device:
    """The device of ``--device`` (default: ``cuda`` when CUDA is available, else ``cpu``)."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise ToolError(f"bad --device {name!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ToolError("--device cuda given but CUDA is not available")
    return device


def set_threads(device: torch.device, threads: int | None) -> None:
    """On the CPU, one intra-op thread unless told otherwise: small models spend their time in
    per-op overhead, which more threads only increase (both methods run with the same setting)."""
    if threads is not None:
        if threads < 1:
            raise ToolError("--threads must be >= 1")
        torch.set_num_threads(threads)
    elif device.type == "cpu":
        torch.set_num_threads(1)


def checkpoint_pair(args) -> tuple[str, str, torch.device]:
    """``(target_dir, draft_dir, device)`` from ``--target/--draft/--device/--threads`` (the
    embedded pair by default; sets the thread count); :class:`ToolError` for a bad combination
    or directory."""
    if (args.target is None) != (args.draft is None):
        raise ToolError("give both --target and --draft, or neither (the embedded pair)")
    if args.target is None:
        target_dir = check_checkpoint(str(EMBEDDED / "target"), "embedded target")
        draft_dir = check_checkpoint(str(EMBEDDED / "draft"), "embedded draft")
    else:
        target_dir = check_checkpoint(args.target, "target")
        draft_dir = check_checkpoint(args.draft, "draft")
    device = parse_device(args.device)
    set_threads(device, args.threads)
    return target_dir, draft_dir, device


def load_pair(target_dir: str, draft_dir: str, device: torch.device, dtype=None):
    """``(target, draft)``: both checkpoints loaded in ``dtype`` (default: as saved), moved to
    ``device``, in eval mode."""
    from transformers import AutoModelForImageTextToText

    kw = {"dtype": dtype} if dtype is not None else {}
    return tuple(
        AutoModelForImageTextToText.from_pretrained(path, **kw).to(device).eval()
        for path in (target_dir, draft_dir)
    )


def inputs_to(inputs: dict, device: torch.device, dtype=None) -> dict:
    """Processor outputs moved to ``device``; the video pixels also cast to ``dtype`` if given."""
    moved = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
    if dtype is not None and "pixel_values_videos" in moved:
        moved["pixel_values_videos"] = moved["pixel_values_videos"].to(dtype)
    return moved


def speedup(reference_s: float | None, method_s: float | None) -> float | None:
    """How many times faster than the reference: ``reference_s / method_s``; None when either
    time is missing or zero (nothing to compare)."""
    if not reference_s or not method_s:
        return None
    return reference_s / method_s
