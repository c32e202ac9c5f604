"""One side of the speculation (target or draft): its decoder, LM head, our KV cache, and the
position of its next token. Every forward after the prompt goes through :meth:`Side.step`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from specvlm import positions
from specvlm.attention import AttentionPlan, attention_plan
from specvlm.decoder import cache_length, decoder_forward, keep_cache_entries


@dataclass
class Side:
    decoder: nn.Module
    lm_head: nn.Module
    embed: nn.Module  # input embeddings
    cache: object  # a transformers DynamicCache we own
    next_pos: torch.Tensor  # CPU long [R]: position of the next token fed (R = 3 for M-RoPE)
    mrope: bool
    device: torch.device  # where the decoder's inputs live
    forwards: int = 0

    @property
    def length(self) -> int:
        return cache_length(self.cache)

    def step(
        self,
        tokens: list[int],
        offsets: torch.Tensor,
        plan: AttentionPlan,
        attention_mask: torch.Tensor,
        logits_rows: slice,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Feed ``tokens`` at positions ``start + offsets`` (default start: ``next_pos``) and
        return the logits of ``logits_rows`` ``[1, rows, V]``; the cache grows by the tokens."""
        ids = torch.tensor([tokens], device=self.embed.weight.device)
        start = self.next_pos if start is None else start
        pos = positions.decode_positions(self.mrope, start, offsets, self.device)
        with attention_plan(plan):
            logits = decoder_forward(
                self.decoder, self.lm_head, self.cache, self.embed(ids).to(self.device), pos,
                attention_mask.to(self.device), logits_rows=logits_rows,
            )  # fmt: skip
        self.forwards += 1
        return logits

    def keep(self, start: int, offsets: list[int]) -> None:
        """Keep cache entries ``< start`` and ``start + offsets``; drop the rest."""
        keep_cache_entries(self.cache, start, offsets)


def ones_mask(length: int, device) -> torch.Tensor:
    """A 2-D all-ones attention mask: plain causal attention over the cache and the new tokens
    (an explicit mask also stops transformers from reading gapped position ids as packed
    sequences)."""
    return torch.ones(1, length, dtype=torch.long, device=device)
