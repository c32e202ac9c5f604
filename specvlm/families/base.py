"""The family adapter interface."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class VideoLayout:
    """Where the video tokens of one prompt sit.

    ``positions``: sequence positions of the ``T * H * W`` grid tokens, frame-major and row-major
    within a frame (the order of the selection's ``grid``). ``extra_positions``: other video
    placeholder positions that are always kept (LLaVA-OneVision's trailing newline token).
    ``text_start``: first position after the last video placeholder (the query rows of the
    scores run from there to the end of the prompt).
    """

    positions: torch.Tensor  # long [T * H * W], on the CPU
    grid: tuple[int, int, int]
    extra_positions: tuple[int, ...]
    text_start: int

    @property
    def num_tokens(self) -> int:
        return self.positions.numel()

    @property
    def span(self) -> tuple[int, int]:
        """``[first, last + 1)`` of the grid tokens (text may be interleaved, e.g. Qwen3-VL)."""
        return int(self.positions[0]), int(self.positions[-1]) + 1


class Family:
    """Adapter base: subclasses fill in the family-specific parts."""

    model_type: str = ""
    display_name: str = ""
    mrope: bool = False  # positions are [R, B, L] (M-RoPE) rather than [B, L]

    def decoder(self, model: nn.Module) -> nn.Module:
        return model.model.language_model

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.lm_head

    def text_config(self, model: nn.Module):
        return model.config.get_text_config()

    def video_token_id(self, model: nn.Module) -> int:
        return int(model.config.video_token_id)

    def video_grid(self, model: nn.Module, inputs: dict) -> tuple[int, int, int] | None:
        raise NotImplementedError

    def num_extra_video_tokens(self) -> int:
        """Video placeholders after the grid tokens that carry no grid cell."""
        return 0

    def prune_extra(self, extra: dict, keep: torch.Tensor) -> dict:
        """Prune family-specific decoder kwargs to the kept sequence positions (bool ``keep``)."""
        return extra

    def vision_geometry(self, model: nn.Module) -> dict:
        """The vision settings that decide how a video becomes tokens (target and draft must
        agree on them)."""
        raise NotImplementedError

    def video_layout(self, model: nn.Module, input_ids: torch.Tensor, inputs: dict):
        """The :class:`VideoLayout` of a batch-1 prompt, or None without video tokens."""
        is_video = input_ids[0].cpu() == self.video_token_id(model)
        where = torch.nonzero(is_video).flatten()
        if where.numel() == 0:
            return None
        grid = self.video_grid(model, inputs)
        if grid is None:
            raise ValueError(
                "the prompt has video placeholder tokens but no video inputs "
                "(pixel_values_videos / video_grid_thw)"
            )
        t, h, w = grid
        extra = self.num_extra_video_tokens()
        if where.numel() != t * h * w + extra:
            raise ValueError(
                f"the prompt has {where.numel()} video placeholder tokens but the video grid "
                f"{grid} needs {t * h * w + extra}; only one video per prompt is supported"
            )
        grid_positions = where[: t * h * w]
        extra_positions = tuple(int(p) for p in where[t * h * w :])
        return VideoLayout(grid_positions, grid, extra_positions, int(where[-1]) + 1)
