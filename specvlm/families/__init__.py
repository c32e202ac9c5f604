"""One small adapter per supported model family, and the lookup by ``config.model_type``.

An adapter knows three things about its family: where the text decoder and the LM head are,
where the video tokens sit in a prompt and how they form a (frames, rows, cols) grid, and
which positions the draft's pruned prompt and the decoding steps use (1-D RoPE or M-RoPE).
"""

from __future__ import annotations

from specvlm.families.base import Family, VideoLayout
from specvlm.families.llava_onevision import LLAVA_ONEVISION
from specvlm.families.qwen_vl import QWEN2_5_VL, QWEN3_VL

FAMILIES: dict[str, Family] = {f.model_type: f for f in (LLAVA_ONEVISION, QWEN2_5_VL, QWEN3_VL)}

__all__ = ["FAMILIES", "Family", "VideoLayout", "family_of"]


def family_of(model, role: str = "model") -> Family:
    """The adapter for ``model``; ``ValueError`` naming the supported families otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        supported = ", ".join(f"{f.display_name} ({t})" for t, f in FAMILIES.items())
        raise ValueError(
            f"the {role} ({type(model).__name__}, model_type={model_type!r}) is not a supported "
            f"model family; supported: {supported}"
        )
    return family
