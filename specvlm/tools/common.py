"""What the tools share: the one-line error, checkpoint directories and the pair they hold,
``--device`` and ``--threads``, output paths and the video path checked before any work, the
sampling options, inputs on a device, and speedup ratios.

Nothing here defines the Triton kernels (``specvlm_kernels``): the CLI imports this module
before it has chosen their backend. Nor does it import torch at module level: the CLI checks
its arguments with the checks here (:func:`check_pair`, :func:`check_device_name`, the output
paths, the sampling options) before torch or transformers load, so a wrong argument is refused
in a fraction of a second. Only the functions that need torch import it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING

from specvlm.names import FAMILIES

if TYPE_CHECKING:
    import torch

EMBEDDED = Path(__file__).resolve().parent.parent / "assets" / "micro"

# Every generation method the tools compare; the target's own greedy ``generate`` comes first
# (the reference output and timing). What each one runs: ``specvlm.tools.comparison``.
METHODS = (
    "autoregressive",
    "autoregressive_compiled",
    "naive_sd",
    "assisted_generation",
    "specvlm",
    "dynamic",
    "overlap",
    "auto",
    "attention",
    "uniform",
    "random",
)


# ``--capture``'s (and ``specvlm eval --overlap``'s) values -> ``specvlm.accelerate``'s
# ``capture=`` (``overlap=``)
CAPTURE = {"auto": "auto", "on": True, "off": False}


class ToolError(ValueError):
    """A bad argument or input: reported in one line, without a traceback, exit code 2."""


class InputError(ToolError):
    """Bad user input (unreadable video, unsupported checkpoint): one line, no traceback."""


def check_video_path(path: str) -> None:
    """:class:`InputError` unless ``path`` is a readable file and PyAV is installed: the checks
    that need no decoding."""
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory, not a video file")
    if not os.path.exists(path):
        raise InputError(f"video file not found: {path}")
    if not os.path.isfile(path):
        raise InputError(f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"video file {path} is not readable (permission denied)")
    if importlib.util.find_spec("av") is None:
        raise InputError('reading a video file needs PyAV: pip install "specvlm[demo]" (or av)')


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
    try:
        with open(cfg_path) as f:
            config = json.load(f)
        model_type = config.get("model_type") if isinstance(config, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ToolError(f"--{role} {path}: cannot read config.json: {one_line(err)}") from err
    if model_type not in FAMILIES:
        names = ", ".join(f"{name} ({t})" for t, name in FAMILIES.items())
        raise ToolError(f"--{role} {path} is a {model_type!r} model; supported: {names}")
    return path


def one_line(err: BaseException) -> str:
    """An error's message on one line; for an OS error (PyAV's too) its text without the errno
    and the call name ("Invalid data found when processing input")."""
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split()) or type(err).__name__


# what torch.device accepts, roughly: a device type, optionally ":index"
_DEVICE = re.compile(r"(?P<type>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<index>[0-9]+))?")


def check_device_name(name: str | None) -> None:
    """:class:`ToolError` unless ``--device`` is None (the default), ``cpu`` or ``cuda[:N]``:
    the spelling only, without torch (whether CUDA is there is :func:`parse_device`'s check)."""
    if name is None:
        return
    match = _DEVICE.fullmatch(name)
    if match is None:
        raise ToolError(f"bad --device {name!r}: expected cpu or cuda[:N]")
    if match["type"] not in ("cpu", "cuda"):
        raise ToolError(f"bad --device {name!r}: only cpu and cuda[:N] are supported")


def check_threads(threads: int | None) -> None:
    """:class:`ToolError` for a ``--threads`` below 1 (None: the default)."""
    if threads is not None and threads < 1:
        raise ToolError("--threads must be >= 1")


def parse_device(name: str | None) -> torch.device:
    """The device of ``--device`` (default: ``cuda`` when CUDA is available, else ``cpu``)."""
    check_device_name(name)
    import torch

    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise ToolError(f"bad --device {name!r}: {' '.join(str(err).split())}") from err
    if device.type not in ("cpu", "cuda"):
        raise ToolError(f"--device {name}: only cpu and cuda[:N] are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ToolError(f"--device {name} given but CUDA is not available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ToolError(
                f"--device {name} given but there {'is' if count == 1 else 'are'} only {count} "
                f"CUDA device{'' if count == 1 else 's'} (cuda:0..cuda:{count - 1})"
            )
    return device


def check_output_file(path: str, option: str, suffixes: tuple[str, ...] = ()) -> None:
    """:class:`ToolError` unless ``path`` can be written as a file (its directory exists and is
    writable, it is not a directory) with one of ``suffixes`` (if given): checked before any
    work, so a long run never ends in a failed write."""
    if os.path.isdir(path):
        raise ToolError(f"{option} {path} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ToolError(f"{option} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ToolError(f"{option} {path}: permission denied")
    if suffixes and not path.lower().endswith(suffixes):
        raise ToolError(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")


def check_output_dir(path: str, option: str) -> None:
    """:class:`ToolError` unless ``path`` is a writable directory or can be made one."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ToolError(f"{option} {path} is a file, not a directory")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ToolError(f"{option} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK):
        raise ToolError(f"{option} {path}: permission denied in {existing}")


def require_matplotlib(option: str) -> None:
    """:class:`ToolError` when matplotlib (needed for ``option``'s plots) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ToolError(f'{option} needs matplotlib: pip install "specvlm[demo]"')


def sampling_options(args) -> dict | None:
    """``generate`` options of ``--temperature/--top-p/--top-k`` (``do_sample=True`` and the
    options given; temperature 1 unless given), or None for greedy decoding (none given, or
    ``--temperature 0`` alone). :class:`ToolError` for a value out of range."""
    temperature, top_p, top_k = args.temperature, args.top_p, args.top_k
    if temperature is not None and temperature < 0:
        raise ToolError(f"--temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ToolError(f"--top-p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 1:
        raise ToolError(f"--top-k must be >= 1, got {top_k}")
    if temperature == 0:
        if top_p is not None or top_k is not None:
            raise ToolError("--top-p and --top-k sample: they need --temperature > 0 (0 is greedy)")
        return None
    if temperature is None and top_p is None and top_k is None:
        return None
    options = {"do_sample": True, "temperature": 1.0 if temperature is None else temperature}
    if top_p is not None:
        options["top_p"] = top_p
    if top_k is not None:
        options["top_k"] = top_k
    return options


def describe_sampling(options: dict | None, seed: int) -> str:
    """``"greedy"`` or e.g. ``"sampling: temperature 0.7, top-p 0.9, seed 0"``."""
    if not options:
        return "greedy"
    parts = [f"temperature {options['temperature']:g}"]
    parts += [f"top-p {options['top_p']:g}"] if "top_p" in options else []
    parts += [f"top-k {options['top_k']}"] if "top_k" in options else []
    return "sampling: " + ", ".join(parts + [f"seed {seed}"])


def set_threads(device: torch.device, threads: int | None) -> None:
    """On the CPU, one intra-op thread unless told otherwise: small models spend their time in
    per-op overhead, which more threads only increase (both methods run with the same setting)."""
    check_threads(threads)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    elif device.type == "cpu":
        torch.set_num_threads(1)


def check_pair(args) -> tuple[str, str]:
    """``(target_dir, draft_dir)`` from ``--target/--draft`` (the embedded pair by default),
    with ``--device`` spelled right and ``--threads`` >= 1: every check of
    :func:`checkpoint_pair` that needs no torch. :class:`ToolError` for a bad combination or
    directory."""
    if (args.target is None) != (args.draft is None):
        raise ToolError("give both --target and --draft, or neither (the embedded pair)")
    if args.target is None:
        target_dir = check_checkpoint(str(EMBEDDED / "target"), "embedded target")
        draft_dir = check_checkpoint(str(EMBEDDED / "draft"), "embedded draft")
    else:
        target_dir = check_checkpoint(args.target, "target")
        draft_dir = check_checkpoint(args.draft, "draft")
    check_device_name(args.device)
    check_threads(args.threads)
    return target_dir, draft_dir


def checkpoint_pair(args) -> tuple[str, str, torch.device]:
    """``(target_dir, draft_dir, device)`` from ``--target/--draft/--device/--threads`` (the
    embedded pair by default; sets the thread count); :class:`ToolError` for a bad combination
    or directory, or a device that is not there."""
    target_dir, draft_dir = check_pair(args)
    device = parse_device(args.device)
    set_threads(device, args.threads)
    return target_dir, draft_dir, device


def load_pair(target_dir: str, draft_dir: str, device: torch.device, dtype=None, device_map=None):
    """``(target, draft)``: both checkpoints loaded in ``dtype`` (default: as saved), moved to
    ``device`` (or placed by ``device_map``, e.g. ``"auto"``, which needs accelerate), in eval
    mode (without transformers' loading progress bars, which would break the tools' own
    progress lines)."""
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    kw = {"dtype": dtype} if dtype is not None else {}
    if device_map is not None:
        kw["device_map"] = device_map
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        models = (
            AutoModelForImageTextToText.from_pretrained(path, **kw)
            for path in (target_dir, draft_dir)
        )
        return tuple((m if device_map is not None else m.to(device)).eval() for m in models)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


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


def per_token_speedup(
    reference_s: float | None, reference_tokens: int, method_s: float | None, method_tokens: int
) -> float | None:
    """Time per token of the reference over that of the method: the speedup of runs that made
    different numbers of tokens (sampling); equal to :func:`speedup` for equal counts. None
    when either has no time or no token."""
    if reference_tokens <= 0 or method_tokens <= 0:
        return None
    ratio = speedup(reference_s, method_s)
    return None if ratio is None else ratio * method_tokens / reference_tokens


def hardware(device: torch.device | None = None) -> str:
    """The machine a run used, in a few words: the GPU's name for a CUDA device, else the CPU
    model and its logical cores (with the torch threads used)."""
    import torch

    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{model} CPU, {os.cpu_count()} cores, {threads} torch thread{'s' * (threads > 1)}"
