"""What ``capture=`` means on a given draft: whether captured steps can run, and whether
``"auto"`` takes them."""

from __future__ import annotations

import torch

from specvlm.decoder import attention_implementation

# Attention implementations that take the explicit additive [1, 1, Q, K] mask captured steps pass.
CAPTURABLE_ATTENTION = ("sdpa", "eager")
# Device types where capture="auto" captures (a CPU compiles for seconds per shape: see below).
AUTO_CAPTURE_DEVICES = ("cuda",)


def check_capturable(decoder: torch.nn.Module) -> str | None:
    """None when the draft's decoder can run captured steps, else why not (one line)."""
    implementation = attention_implementation(decoder).removeprefix("specvlm:")
    if implementation not in CAPTURABLE_ATTENTION:
        return (
            f"the draft runs attention {implementation!r}, which takes no explicit mask; "
            f"load it with attn_implementation in {CAPTURABLE_ATTENTION}"
        )
    return None


def capture_decision(
    capture, decoder: torch.nn.Module, failed: str | None = None
) -> tuple[bool, str]:
    """``(capture or not, why)`` for a call; raises for ``capture=True`` where impossible.

    ``"auto"`` captures on a GPU (a CUDA graph replay costs microseconds per forward, eager
    transformers code hundreds) and not on a CPU: there ``torch.compile`` makes a draft forward
    several times faster but costs seconds per shape, the first time in a process (measured in
    ``docs/performance.md``, "Captured draft steps"), more than one call saves; pass
    ``capture=True`` to compile anyway (long-running processes, many calls). ``failed``: why
    capturing this draft failed before (``"auto"`` then stays eager; ``True`` tries again)."""
    why_not = check_capturable(decoder)
    if capture is True:
        if why_not is not None:
            raise NotImplementedError(f"capture=True: {why_not}")
        return True, "capture=True"
    if capture is False:
        return False, "capture=False"
    if why_not is not None:
        return False, f"auto: eager ({why_not})"
    if failed is not None:
        return False, f"auto: eager (capture failed: {failed})"
    device = next(decoder.parameters()).device
    if device.type in AUTO_CAPTURE_DEVICES:
        return True, f"auto: captured on {device.type}"
    return False, f"auto: eager on {device.type} (compiling costs more than a call saves)"
