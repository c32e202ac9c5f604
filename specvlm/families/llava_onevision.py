"""LLaVA-OneVision: SigLIP + projector + Qwen2 (1-D RoPE).

A video is ``frames x ceil(S/2) x ceil(S/2)`` pooled tokens (``S = image_size // patch_size``),
frame-major, followed by one learned newline token: ``T * H * W + 1`` placeholders in a row.
"""

from __future__ import annotations

import math

from specvlm.families.base import Family
from specvlm.names import FAMILIES


class LlavaOnevisionFamily(Family):
    model_type = "llava_onevision"
    display_name = FAMILIES[model_type]
    mrope = False

    def video_grid(self, model, inputs):
        pixels = inputs.get("pixel_values_videos")
        if pixels is None:
            return None
        vision = model.config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)
        return int(pixels.shape[1]), side, side

    def vision_geometry(self, model):
        vision = model.config.vision_config
        return {
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            # "default" drops the first patch feature, "full" keeps it: another token count
            "vision_feature_select_strategy": model.config.vision_feature_select_strategy,
        }

    def num_extra_video_tokens(self) -> int:
        return 1  # the newline token after the frames


LLAVA_ONEVISION = LlavaOnevisionFamily()
