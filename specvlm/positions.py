"""Position ids: the prompt's, the draft's pruned prompt's, and those of decoded tokens.

Shapes follow the stock decoders: ``[1, L]`` for 1-D RoPE (LLaVA-OneVision's Qwen2), ``[R, 1, L]``
for M-RoPE (Qwen2.5-VL / Qwen3-VL: ``R = 3`` rows t, h, w, or ``R = 4`` with the leading text row
that ``generate`` prepares in transformers >= 5.2x). Prompt positions are never computed here:
they are what the family's own wrapper (its rope-index function, or ``generate``'s preparation,
:func:`specvlm.decoder.with_generation_position_ids`) hands its decoder. The
draft keeps the columns of the tokens it keeps; decoding continues from the last prompt token.
"""

from __future__ import annotations

import torch


def prompt_positions(position_ids: torch.Tensor | None, length: int, mrope: bool, device):
    """The prompt's position ids, materialising the decoder's default (``0 .. L-1`` on every
    row) when the wrapper passed None (text-only prompts)."""
    if position_ids is not None:
        return position_ids
    ids = torch.arange(length, device=device)[None]
    return ids[None].expand(3, 1, length) if mrope else ids


def draft_positions(full: torch.Tensor, keep: torch.Tensor, mode: str) -> torch.Tensor:
    """Positions of the draft's pruned prompt (``keep``: bool ``[L]`` over the full prompt).

    ``"original"``: each kept token keeps its position (gaps where tokens were dropped; the only
    choice for M-RoPE, whose text after the video then continues exactly as in the full prompt).
    ``"compact"`` (1-D only): ``0 .. L'-1``."""
    if mode == "original":
        return full[..., keep.to(full.device)]
    if mode == "compact":
        if full.dim() != 2:
            raise ValueError("compact positions exist for 1-D RoPE only")
        return torch.arange(int(keep.sum()), device=full.device)[None]
    raise ValueError(f"mode must be 'original' or 'compact', got {mode!r}")


def next_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """Per row, the position of the token after the prompt: CPU long ``[R]`` (``[1]`` for 1-D).

    The last prompt token's position plus one on every row, as stock ``generate`` continues. For
    M-RoPE this is not always the largest position + 1: a video's temporal positions may run past
    the text that follows it."""
    return position_ids[..., -1].reshape(-1).cpu() + 1


def decode_positions(mrope: bool, start: torch.Tensor, offsets: torch.Tensor, device):
    """Position ids of decoded tokens at ``start + offsets`` (``offsets`` ``[N]``: chain index or
    tree depth); every M-RoPE row advances alike, as for text."""
    ids = start[:, None] + offsets[None, :]  # [R, N]
    if mrope:
        ids = ids[:, None, :]  # [R, 1, N]
    return ids.to(device)
