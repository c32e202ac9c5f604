"""Comparison helpers for kernel-vs-reference tests."""

from __future__ import annotations

import torch


def nan_filled(shape, dtype, device) -> torch.Tensor:
    """An output buffer poisoned with NaN, so unwritten elements fail loudly."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def max_abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return (a.double() - b.double()).abs().max().item()


def assert_matches_reference(
    out: torch.Tensor,
    exact: torch.Tensor,
    *,
    baseline: torch.Tensor | None = None,
    atol: float,
    name: str = "output",
) -> None:
    """Check ``out`` against a high-precision ``exact`` result.

    Tolerance follows flash-attention's rule: the kernel's error may be at most twice the
    error of a plain PyTorch implementation at the kernel's own precision (``baseline``) plus
    ``atol``. Without a baseline the error must be within ``atol``. NaN never passes.
    """
    assert out.shape == exact.shape, f"{name}: shape {tuple(out.shape)} != {tuple(exact.shape)}"
    assert not torch.isnan(out).any(), f"{name}: contains NaN (unwritten or invalid elements)"
    err = max_abs_err(out, exact)
    allowed = atol + (2.0 * max_abs_err(baseline, exact) if baseline is not None else 0.0)
    assert err <= allowed, f"{name}: max abs error {err:.3g} > allowed {allowed:.3g}"


def assert_agrees_on_nonfinite(
    out: torch.Tensor, exact: torch.Tensor, *, atol: float, rtol: float = 0.0, name: str = "output"
) -> None:
    """``out`` has NaN, ``+inf`` and ``-inf`` exactly where ``exact`` has them, and is within
    ``atol + rtol * |exact|`` of it everywhere else (for inputs holding NaN or infinities)."""
    assert out.shape == exact.shape, f"{name}: shape {tuple(out.shape)} != {tuple(exact.shape)}"
    out, exact = out.double(), exact.double()
    for what, pick in (
        ("NaN", torch.isnan),
        ("+inf", lambda x: x == float("inf")),
        ("-inf", lambda x: x == float("-inf")),
    ):
        got, want = pick(out), pick(exact)
        diff = (got != want).nonzero().tolist()
        assert not diff, f"{name}: {what} differs at {diff[:8]} ({len(diff)} elements)"
    finite = torch.isfinite(exact)
    err = (out[finite] - exact[finite]).abs()
    allowed = atol + rtol * exact[finite].abs()
    assert bool((err <= allowed).all()), f"{name}: max abs error {err.max().item():.3g}"
