"""What ``capture=`` means for each model of a pair: whether its steps can be captured, and
whether ``"auto"`` captures them.

* ``True``: the draft's steps and the target's verification (and plain decoding) captured; an
  error (one line) where either cannot be.
* ``"auto"`` (default): the draft's steps captured on a GPU (a CUDA graph replay costs
  microseconds per forward, eager transformers code hundreds), never on a CPU: there
  ``torch.compile`` makes a draft forward 0.3-0.6x as long but costs seconds per shape the first
  time in a process (``docs/performance.md``, "Captured draft steps"), more than a call saves.
  The target stays eager under ``"auto"``: compiling a large target costs minutes per width,
  not measured yet on a GPU. Where capturing fails, ``"auto"`` drafts eagerly (and says why).
* ``False``: eager.
"""

from __future__ import annotations

import torch

from specvlm.decoder import attention_implementation

# Attention implementations that take the explicit additive [1, 1, Q, K] mask captured steps pass.
CAPTURABLE_ATTENTION = ("sdpa", "eager")
# Device types where capture="auto" captures the draft.
AUTO_CAPTURE_DEVICES = ("cuda",)


def check_capturable(decoder: torch.nn.Module, head: torch.nn.Module | None = None) -> str | None:
    """None when the decoder (and its LM head) can run captured steps, else why not."""
    implementation = attention_implementation(decoder).removeprefix("specvlm:")
    if implementation not in CAPTURABLE_ATTENTION:
        return (
            f"it runs attention {implementation!r}, which takes no explicit mask; load it with "
            f"attn_implementation in {CAPTURABLE_ATTENTION}"
        )
    modules = [decoder] if head is None else [decoder, head]
    devices = {p.device for m in modules for p in m.parameters()}
    if len(devices) > 1:
        return f"it is split over {len(devices)} devices; captured steps run on one"
    return None


def capture_decision(
    capture, role: str, decoder: torch.nn.Module, head=None, failed: str | None = None
) -> tuple[bool, str]:
    """``(capture or not, why)`` for ``role`` (``"draft"`` / ``"target"``) in a call; raises for
    ``capture=True`` where impossible. ``failed``: why capturing this model failed before
    (``"auto"`` then stays eager; ``True`` tries again)."""
    why_not = check_capturable(decoder, head)
    if capture is True:
        if why_not is not None:
            raise NotImplementedError(f"capture=True: the {role} cannot be captured: {why_not}")
        return True, "capture=True"
    if capture is False:
        return False, "capture=False"
    if role != "draft":
        return False, "auto: the target's forwards run eager"
    if why_not is not None:
        return False, f"auto: eager ({why_not})"
    if failed is not None:
        return False, f"auto: eager (capture failed: {failed})"
    device = next(decoder.parameters()).device
    if device.type in AUTO_CAPTURE_DEVICES:
        return True, f"auto: captured on {device.type}"
    return False, f"auto: eager on {device.type} (compiling costs more than a call saves)"
