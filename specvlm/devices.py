"""Devices a pair of models lives on, and device-synchronised wall-clock time.

Library code (``accelerate``) and the tools (timing, comparison) share these two helpers. No
device is queried at import time.
"""

from __future__ import annotations

import time

import torch
from torch import nn


def cuda_devices(*models: nn.Module) -> list[torch.device]:
    """The CUDA devices holding any parameter of ``models``, sorted (empty on a CPU-only run)."""
    found = {p.device for m in models for p in m.parameters() if p.device.type == "cuda"}
    return sorted(found, key=str)


def synchronized_now(devices: list[torch.device]) -> float:
    """``time.perf_counter()`` after every queued kernel on ``devices`` has finished."""
    for dev in devices:
        torch.cuda.synchronize(dev)
    return time.perf_counter()
