"""Greedy chains for several requests in one forward per chain position.

Each request keeps its own draft :class:`~specvlm.side.Side` (its own cache, of its own length).
A forward of the batch stacks their caches into one, each left-padded to the longest
(``[R, H, L_max, D]`` per layer), feeds every request's new tokens right-padded to the longest
(``[R, N]``) with a bool mask per request (its own cache entries, then its new tokens causally;
padding is never seen), and hands each request's new cache entries back to its own cache. So a
chain of ``k`` costs ``k`` forwards of the whole batch instead of ``k`` forwards per request; the
copies of the caches cost one read and write of every draft cache per forward (a single request
runs :func:`specvlm.drafting.draft_tree` on its own cache: no copies).

The result is what :func:`specvlm.drafting.draft_tree` on a chain gives each request alone (the
same tokens, up to float rounding in the batched matrix products; the tests check equality).
"""

from __future__ import annotations

import torch

from specvlm.decoder import decoder_forward, new_cache
from specvlm.drafting import DraftPlan, draft_tree
from specvlm.side import Side
from specvlm.trees import chain


def draft_chains(sides: list[Side], pending: list[list[int]], k: int) -> list[list[int]]:
    """For each request ``r``, feed ``pending[r]`` (not empty) to ``sides[r]`` and draft ``k``
    greedy tokens after it. Each side's cache then holds its pending tokens and the first
    ``k - 1`` drafted ones (the last is never fed), as with :func:`draft_tree` on a chain; its
    ``next_pos`` is left where it was (the caller moves it, as it does after ``draft_tree``)."""
    if not sides:
        return []
    if any(not p for p in pending):
        raise ValueError("every request needs at least one pending token")
    if len(sides) == 1:  # nothing to batch: no cache copies
        return [draft_tree(sides[0], DraftPlan.of(chain(k)), pending[0]).tokens]
    chains: list[list[int]] = [[] for _ in sides]
    feed = [list(p) for p in pending]
    offsets = [0] * len(sides)  # tokens each side was fed in this call
    for step in range(k):
        logits = _forward(sides, feed, offsets)
        for r, row in enumerate(logits):
            chains[r].append(int(row.argmax()))
            offsets[r] += len(feed[r])
        if step + 1 < k:
            feed = [[chain[-1]] for chain in chains]
    return chains


def _forward(sides: list[Side], feed: list[list[int]], offsets: list[int]) -> torch.Tensor:
    """One forward of every request's ``feed`` tokens after its cache; returns the presented
    logits of each request's last fed token ``[R, V]``."""
    first = sides[0]
    device = first.device
    lengths = [side.length for side in sides]
    longest, width = max(lengths), max(len(f) for f in feed)
    rows = len(sides)
    # inputs, right-padded with each row's last token (never seen, its outputs unused)
    fed = [side.feedable(f) for side, f in zip(sides, feed, strict=True)]
    ids = [row + [row[-1]] * (width - len(row)) for row in fed]
    embeds = first.embed(torch.tensor(ids, device=first.embed.weight.device)).to(device)
    # positions: each row from its own next position
    steps = torch.arange(width)
    starts = torch.stack([side.next_pos + off for side, off in zip(sides, offsets, strict=True)])
    pos = (starts[:, :, None] + steps[None, None, :]).to(device)  # [R, P, N]
    pos = pos.permute(1, 0, 2) if first.mrope else pos[:, 0, :]  # [P, R, N] or [R, N]
    # mask [R, 1, N, L_max + N]: a row's own cache entries, then its new tokens causally
    mask = torch.zeros(rows, 1, width, longest + width, dtype=torch.bool)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for r, (length, f) in enumerate(zip(lengths, feed, strict=True)):
        mask[r, 0, :, longest - length : longest] = True
        mask[r, 0, :, longest:] = causal
        mask[r, 0, len(f) :, longest:] = torch.eye(width, dtype=torch.bool)[len(f) :]  # padding
    cache = _stacked(sides, longest)
    out = decoder_forward(
        first.decoder,
        first.lm_head,
        cache,
        embeds,
        pos,
        mask.to(device),
        logits_rows=slice(None),
    )
    for r, (side, f) in enumerate(zip(sides, feed, strict=True)):
        _append(side.cache, cache, r, longest, len(f))
        side.forwards += 1
    last = torch.tensor([len(f) - 1 for f in feed], device=out.device)
    return first.present(out[torch.arange(rows, device=out.device), last])


def _stacked(sides: list[Side], longest: int):
    """A cache holding every side's cache, each left-padded with zeros to ``longest``."""
    cache = new_cache()
    for layer, _ in enumerate(sides[0].cache.layers):
        keys, values = [], []
        for side in sides:
            own = side.cache.layers[layer]
            pad = longest - own.keys.shape[-2]
            keys.append(torch.nn.functional.pad(own.keys, (0, 0, pad, 0)))
            values.append(torch.nn.functional.pad(own.values, (0, 0, pad, 0)))
        cache.update(torch.cat(keys), torch.cat(values), layer)
    return cache


def _append(own, stacked, row: int, longest: int, count: int) -> None:
    """Append row ``row``'s ``count`` new entries of ``stacked`` to the side's own cache."""
    for layer, shared in enumerate(stacked.layers):
        new = slice(longest, longest + count)
        own.update(shared.keys[row : row + 1, :, new], shared.values[row : row + 1, :, new], layer)
