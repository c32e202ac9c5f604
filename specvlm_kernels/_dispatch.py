"""The one place that decides which backend runs a kernel call, and how a launch is set up.

* CUDA (and ROCm, which PyTorch also calls ``cuda``) tensors run the compiled Triton kernel.
* CPU tensors run the Triton kernel under the interpreter when ``TRITON_INTERPRET=1`` is set in
  the environment (it must be set before :mod:`specvlm_kernels` is imported, since Triton reads
  it when a kernel is defined), and the plain-PyTorch reference otherwise.
* ``SPECVLM_KERNELS_BACKEND=reference`` forces the reference everywhere (for debugging);
  ``SPECVLM_KERNELS_BACKEND=triton`` forces the Triton launchers everywhere (the compile-time
  analysis, ``bench/compile_check.py``, runs them on ``meta`` tensors and intercepts the
  launches; nothing runs).
* A CUDA tensor never runs under the interpreter: if the kernels were defined with
  ``TRITON_INTERPRET=1`` (Triton would copy the tensors to the CPU and back), a launch on a CUDA
  tensor raises instead (:func:`check_compiled`).
* ``SPECVLM_KERNELS_DEBUG=1`` turns on the value checks that need a host-device
  synchronisation on CUDA tensors (they always run on CPU tensors, where they cost no sync).

Nothing here queries a device at import time.
"""

from __future__ import annotations

import contextlib
import os

import torch

TRITON = "triton"
REFERENCE = "reference"

# Streaming multiprocessors assumed for ``meta`` tensors (the compile-time analysis): an H100.
META_SM_COUNT = 132

_TRUE = ("1", "true", "yes", "on")
_SM_COUNT: dict[tuple[str, int | None], int] = {}


def _interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def backend_for(device: torch.device) -> str:
    """Return ``"triton"`` or ``"reference"`` for tensors on ``device``."""
    forced = os.environ.get("SPECVLM_KERNELS_BACKEND", "").strip().lower()
    if forced == REFERENCE:
        return REFERENCE
    if forced == TRITON:
        return TRITON
    if device.type == "cuda":
        return TRITON
    if device.type == "cpu" and _interpreter_enabled():
        return TRITON
    return REFERENCE


def gpu_config(device: torch.device) -> bool:
    """Whether a launcher picks its GPU configuration (tile sizes, warps, splits) for tensors on
    ``device``: CUDA, and ``meta`` (the compile-time analysis of the GPU launches)."""
    return device.type in ("cuda", "meta")


def device_guard(device: torch.device):
    """Triton launches on the *current* CUDA device: make it ``device`` for the launch (with
    ``device_map="auto"`` the inputs may live on another GPU than the current one)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def is_interpreted(kernel) -> bool:
    """True if ``kernel`` was defined under ``TRITON_INTERPRET=1`` (an interpreter function)."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_compiled(kernel, device: torch.device) -> None:
    """Refuse to run ``kernel`` under the interpreter on a CUDA tensor: on a CUDA machine the
    kernels must be defined without ``TRITON_INTERPRET`` (the tests' conftest only sets it when
    there is no CUDA device)."""
    if device.type == "cuda" and is_interpreted(kernel):
        raise RuntimeError(
            f"{kernel.__name__} was defined with TRITON_INTERPRET=1 but is launched on {device}: "
            "it would run under the Triton interpreter (CPU copies), not compiled. Unset "
            "TRITON_INTERPRET before importing specvlm_kernels on a CUDA machine."
        )


def debug_checks() -> bool:
    """``SPECVLM_KERNELS_DEBUG=1``: also run the value checks that synchronise on CUDA."""
    return os.environ.get("SPECVLM_KERNELS_DEBUG", "0").strip().lower() in _TRUE


def value_checks(device: torch.device) -> bool:
    """Whether the public functions check input *values* (not only shapes and dtypes) for
    tensors on ``device``: always on the CPU (no synchronisation), on CUDA only with
    :func:`debug_checks` and outside CUDA-graph capture; never on ``meta`` (no values)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return debug_checks() and not torch.cuda.is_current_stream_capturing()
    return False


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (queried on first use, cached per device).

    ``meta``: :data:`META_SM_COUNT`. CPU (the interpreter runs programs serially): 2, so the
    split heuristics pick few splits for the small test shapes."""
    key = (device.type, device.index)
    if key not in _SM_COUNT:
        if device.type == "cuda":
            _SM_COUNT[key] = torch.cuda.get_device_properties(device).multi_processor_count
        elif device.type == "meta":
            _SM_COUNT[key] = META_SM_COUNT
        else:
            _SM_COUNT[key] = 2
    return _SM_COUNT[key]


def waves_split(base_ctas: int, n_blocks: int, max_splits: int, sms: int) -> int:
    """Split count ``S`` in ``[1, max_splits]`` for a launch of ``base_ctas * S`` programs that
    share ``n_blocks`` units of work per base program (each gets ``ceil(n_blocks / S)``).

    Time is modelled as the busiest SM's load: ``ceil(base_ctas * S / sms)`` programs (whole
    waves over the SMs) of ``ceil(n_blocks / S) + 2`` units each (2: a program's prologue and
    epilogue), plus ``S / 16`` units for the partial results that the splits write and a
    merge reads back. The smallest ``S`` within 2% of the least time wins: ``S`` grows while
    whole waves fill up, and stops where another, partly empty wave would cost more than it
    saves (an already full grid is not split for a sliver of balance)."""
    max_splits = max(1, min(max_splits, n_blocks))
    costs = [
        -(-base_ctas * s // sms) * (-(-n_blocks // s) + 2) + s / 16.0
        for s in range(1, max_splits + 1)
    ]
    least = min(costs)
    return next(s for s, cost in enumerate(costs, start=1) if cost <= 1.02 * least)
