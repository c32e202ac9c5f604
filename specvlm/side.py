"""One side of the speculation (target or draft): its decoder, LM head, our KV cache, and the
position of its next token. Every forward after the prompt goes through :meth:`Side.step`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from specvlm import positions
from specvlm.attention import AttentionPlan, attention_plan
from specvlm.decoder import cache_length, decoder_forward, keep_cache_entries

# What a draft is fed for a token id outside its vocabulary (a padding row of a larger target
# vocabulary: never a real token). The draft only proposes; the target verifies everything.
PLACEHOLDER_ID = 0


@dataclass
class Side:
    """``logits_width``: present the logits in a vocabulary of this width (the target's, for a
    draft whose vocabulary differs from it only by padding rows): rows the model lacks are
    ``-inf``, rows beyond the width are dropped. ``known_ids``: ids at or above it are not in the
    model's vocabulary and are fed as :data:`PLACEHOLDER_ID`. Both None: the model's own."""

    decoder: nn.Module
    lm_head: nn.Module
    embed: nn.Module  # input embeddings
    cache: object  # a transformers DynamicCache we own
    next_pos: torch.Tensor  # CPU long [R]: position of the next token fed (R = 3 for M-RoPE)
    mrope: bool
    device: torch.device  # where the decoder's inputs live
    logits_width: int | None = None
    known_ids: int | None = None
    forwards: int = 0

    @property
    def length(self) -> int:
        return cache_length(self.cache)

    def step(
        self,
        tokens,
        offsets: torch.Tensor,
        plan: AttentionPlan,
        attention_mask: torch.Tensor,
        logits_rows: slice,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Feed ``tokens`` at positions ``start + offsets`` (default start: ``next_pos``) and
        return the logits of ``logits_rows`` ``[1, rows, V]``; the cache grows by the tokens."""
        ids, pos = self.inputs(self.feedable(tokens), offsets, start)
        with attention_plan(plan):
            logits = decoder_forward(
                self.decoder,
                self.lm_head,
                self.cache,
                self.embed(ids).to(self.device),
                pos,
                attention_mask.to(self.device),
                logits_rows=logits_rows,
            )
        self.forwards += 1
        return self.present(logits)

    def inputs(
        self, fed, offsets: torch.Tensor, start: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ids ``[1, n]`` of the ``fed`` tokens (ints, or a long tensor) and their position
        ids at ``start + offsets`` (default start: ``next_pos``), where the decoder takes
        them."""
        if isinstance(fed, torch.Tensor):
            ids = fed.to(self.embed.weight.device)[None]
        else:
            ids = torch.tensor([fed], device=self.embed.weight.device)
        start = self.next_pos if start is None else start
        return ids, positions.decode_positions(self.mrope, start, offsets, self.device)

    def feedable(self, tokens):
        """``tokens`` (ints, or a long tensor kept where it is) as this model is fed them (ids
        it lacks as :data:`PLACEHOLDER_ID`)."""
        if isinstance(tokens, torch.Tensor):
            if self.known_ids is None:
                return tokens
            return torch.where(tokens < self.known_ids, tokens, PLACEHOLDER_ID)
        if self.known_ids is None:
            return list(tokens)
        return [t if t < self.known_ids else PLACEHOLDER_ID for t in tokens]

    def present(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's logits in the vocabulary it proposes in (``logits_width``)."""
        return logits if self.logits_width is None else _to_width(logits, self.logits_width)

    def keep(self, start: int, offsets: list[int]) -> None:
        """Keep cache entries ``< start`` and ``start + offsets``; drop the rest."""
        keep_cache_entries(self.cache, start, offsets)


def ones_mask(length: int, device) -> torch.Tensor:
    """A 2-D all-ones attention mask: plain causal attention over the cache and the new tokens
    (an explicit mask also stops transformers from reading gapped position ids as packed
    sequences)."""
    return torch.ones(1, length, dtype=torch.long, device=device)


def _to_width(logits: torch.Tensor, width: int) -> torch.Tensor:
    """``logits [..., V]`` as ``[..., width]``: cut, or padded with ``-inf``."""
    vocab = logits.shape[-1]
    if vocab >= width:
        return logits[..., :width]
    pad = logits.new_full((*logits.shape[:-1], width - vocab), float("-inf"))
    return torch.cat([logits, pad], dim=-1)
