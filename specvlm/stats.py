"""What one ``generate`` call did: :class:`GenerationStats` (``SpeculativeDecoder.last_stats``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class GenerationStats:
    """What the last ``generate`` call did. Times are seconds (device-synchronised)."""

    mean_accepted_length: float = 0.0  # tokens emitted per target verification, bonus included
    target_forwards: int = 0  # prefill + verifications
    draft_forwards: int = 0  # prefill + drafting forwards
    new_tokens: int = 0
    video_tokens: int = 0  # grid tokens of the video (0 without video)
    kept_video_tokens: int = 0  # grid tokens the draft saw
    target_prefill: float = 0.0  # includes scoring
    scoring: float = 0.0
    pruning: float = 0.0
    draft_prefill: float = 0.0
    decode: float = 0.0
    total: float = 0.0
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)  # per CUDA device
    accepted_lengths: list[int] = field(default_factory=list)  # per verification
    drafted_depths: list[int] = field(default_factory=list)  # tree depth drafted, per step
    video_grid: tuple[int, int, int] | None = None  # (T, H, W) of the video tokens
    video_scores: torch.Tensor | None = field(default=None, repr=False)  # CPU fp32 [T*H*W]
    kept_indices: torch.Tensor | None = field(default=None, repr=False)  # CPU long, sorted

    def finish(self) -> None:
        """Derived fields, once the call is done."""
        steps = len(self.accepted_lengths)
        self.mean_accepted_length = sum(self.accepted_lengths) / steps if steps else 0.0
