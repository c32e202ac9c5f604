"""Input validation shared by the public kernel entry points.

Every helper raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong
shape, range or device) with a message that names the argument and says what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_tensor(name: str, x, ndim: int, dtypes: Sequence[torch.dtype] | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({allowed}), got {x.dtype}")


def check_same_device(**tensors: torch.Tensor) -> None:
    names = list(tensors)
    first = tensors[names[0]]
    for name in names[1:]:
        if tensors[name].device != first.device:
            raise ValueError(
                f"{name} is on {tensors[name].device} but {names[0]} is on {first.device}; "
                "all tensors must be on one device"
            )


def check_same_dtype(**tensors: torch.Tensor) -> None:
    names = list(tensors)
    first = tensors[names[0]]
    for name in names[1:]:
        if tensors[name].dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {tensors[name].dtype} but {names[0]} has {first.dtype}; "
                "they must match"
            )


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """Check that ``value`` is a Python/NumPy/0-d-tensor integer in ``[low, high]``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value.__index__())
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_float(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not (low <= value <= high):  # also rejects NaN
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_scale(scale, head_dim: int) -> float:
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    scale = float(scale)
    if not (scale > 0.0 and scale < float("inf")):
        raise ValueError(f"scale must be a finite positive number, got {scale}")
    return scale


def check_gqa(q_name: str, hq: int, k_name: str, hk: int) -> int:
    """Return the group size ``hq // hk``; raise unless ``hk`` divides ``hq``."""
    if hk < 1 or hq % hk != 0:
        raise ValueError(
            f"the number of heads of {q_name} ({hq}) must be a multiple of that of "
            f"{k_name} ({hk}) (grouped-query attention)"
        )
    return hq // hk


def check_q_k(q: torch.Tensor, k: torch.Tensor, k_len_name: str) -> None:
    """``q [B, Hq, *, D]`` and ``k [B, Hk, <k_len_name>, D]``: same batch and head dim, D >= 1,
    ``Hq % Hk == 0``."""
    b, hq, _, d = q.shape
    if d < 1:
        raise ValueError(f"q must have a head dimension >= 1, got shape {tuple(q.shape)}")
    if k.shape[0] != b or k.shape[3] != d:
        raise ValueError(
            f"k must have shape [B={b}, Hk, {k_len_name}, D={d}] to match q {tuple(q.shape)}, "
            f"got {tuple(k.shape)}"
        )
    check_gqa("q", hq, "k", k.shape[1])
