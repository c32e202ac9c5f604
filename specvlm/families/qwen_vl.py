"""Qwen2.5-VL and Qwen3-VL: ViT with 2x2 spatial merge + Qwen LM with 3-D M-RoPE.

A video of ``video_grid_thw = (t, h, w)`` patches gives ``t x h/m x w/m`` tokens (``m`` the
spatial merge size), frame-major, row-major. Qwen3-VL may put a timestamp text between frames,
so the grid tokens need not be contiguous. Positions are the stock 3-D rope index (captured from
the model, never recomputed here), so the draft keeps each kept token's original 3-D position.
Qwen3-VL also adds deepstack visual features in its first decoder layers; they are pruned with
the kept tokens.
"""

from __future__ import annotations

from specvlm.families.base import Family
from specvlm.names import FAMILIES


class QwenVLFamily(Family):
    mrope = True

    def __init__(self, model_type: str, display_name: str):
        self.model_type = model_type
        self.display_name = display_name

    def video_grid(self, model, inputs):
        thw = inputs.get("video_grid_thw")
        if thw is None:
            return None
        if thw.shape[0] != 1:
            raise ValueError(
                f"only one video per prompt is supported, video_grid_thw has {thw.shape[0]} rows"
            )
        merge = int(model.config.vision_config.spatial_merge_size)
        t, h, w = (int(x) for x in thw[0])
        return t, h // merge, w // merge

    def prune_extra(self, extra, keep):
        extra = dict(extra)
        visual = extra.get("visual_pos_masks")
        if visual is not None:
            keep_dev = keep.to(visual.device)
            kept_visual = keep_dev[None, :][visual]  # which visual rows survive, in order
            extra["visual_pos_masks"] = visual[:, keep_dev]
            deep = extra.get("deepstack_visual_embeds")
            if deep is not None:
                extra["deepstack_visual_embeds"] = [d[kept_visual.to(d.device)] for d in deep]
        return extra

    def vision_geometry(self, model):
        vision = model.config.vision_config
        names = ("patch_size", "temporal_patch_size", "spatial_merge_size")
        return {name: getattr(vision, name, None) for name in names}


QWEN2_5_VL = QwenVLFamily("qwen2_5_vl", FAMILIES["qwen2_5_vl"])
QWEN3_VL = QwenVLFamily("qwen3_vl", FAMILIES["qwen3_vl"])

__all__ = ["QWEN2_5_VL", "QWEN3_VL"]
