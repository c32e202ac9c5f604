"""The one place that decides which backend runs a kernel call.

* CUDA (and ROCm, which PyTorch also calls ``cuda``) tensors run the compiled Triton kernel.
* CPU tensors run the Triton kernel under the interpreter when ``TRITON_INTERPRET=1`` is set in
  the environment (it must be set before :mod:`specvlm_kernels` is imported, since Triton reads
  it when a kernel is defined), and the plain-PyTorch reference otherwise.
* ``SPECVLM_KERNELS_BACKEND=reference`` forces the reference everywhere (for debugging).

Nothing here queries a device at import time.
"""

from __future__ import annotations

import os

import torch

TRITON = "triton"
REFERENCE = "reference"


def _interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def backend_for(device: torch.device) -> str:
    """Return ``"triton"`` or ``"reference"`` for tensors on ``device``."""
    if os.environ.get("SPECVLM_KERNELS_BACKEND", "").strip().lower() == REFERENCE:
        return REFERENCE
    if device.type == "cuda":
        return TRITON
    if device.type == "cpu" and _interpreter_enabled():
        return TRITON
    return REFERENCE
