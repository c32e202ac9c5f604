"""Greedy chains for several requests in one forward per chain position, over one persistent
batched draft cache.

:class:`BatchedDraftCache` holds every live request's draft cache in one preallocated store per
layer, keys and values ``[slots, kv_heads, capacity, head_dim]``, with a length per slot:

* **admission** (:meth:`~BatchedDraftCache.admit`) copies a request's prefilled cache into a
  slot, once; the request's own ``DynamicCache`` can then be dropped;
* **rollback** (:meth:`~BatchedDraftCache.cut`, vLLM rejected part of the last chain) only sets
  the slot's length: entries past it are stale, never attended, overwritten later;
* **a batched forward** (:func:`draft_chains`) writes each request's new keys and values in
  place at its own offset (:class:`_StepCache`, the ``update`` contract of transformers'
  decoders) and attends to a view of the store's rows with an additive mask: a row's query ``j``
  sees the row's valid entries and its new tokens up to ``j``; padding queries (a row fed fewer
  tokens than the widest) see only their own new entry and are never seen;
* **release** (:meth:`~BatchedDraftCache.release`) frees the slot and moves the last live slot
  into it (a copy of one request's cache, once per finished request), so the live slots are
  always ``0 .. live - 1``;
* **growth**: when a new request finds no free slot, or a forward would write past the capacity,
  the store doubles (slots or capacity) and the old store is copied once: rare.

**Subsets of slots.** A forward runs over the *span* of the step's slots (lowest to highest):
that is a view of the store (``keys[lo:hi + 1, :, :width]``), never a copy. Live slots in the
span that draft nothing this step are fed placeholder tokens (the forward's width: up to the
longest pending chain in the first forward, one after) that see only their own new entries
(written past the slot's length: stale, invisible); that is their cost. Since slots are kept
compact and vLLM schedules every running request each step, the span is the step's slots in
the usual case. (The alternative, gathering only the step's rows, copies every one of their
caches on every forward: what this store exists to avoid.) A single request is a span of one:
a view as well.

**Cost.** The store reserves ``capacity`` entries for every slot: the longest request's length
(rounded up to a power of two) for each, where a paged cache would reserve each its own. The
attention of a forward reads ``max(length) + width`` entries per row (the mask hides the rest).

The result is what :func:`specvlm.drafting.draft_tree` on a chain gives each request alone (the
same tokens, up to float rounding in the batched matrix products; the tests check equality).
"""

from __future__ import annotations

from collections.abc import Hashable

import torch

from specvlm.attention import BasePlan, attention_plan
from specvlm.decoder import decoder_forward
from specvlm.side import PLACEHOLDER_ID, Side


class BatchedDraftCache:
    """The draft caches of a proposer's live requests (see the module docstring), each under a
    key of the caller's (a request id). Belongs to one proposer: not shared between threads."""

    def __init__(self, slots: int = 4, headroom: int = 64):
        # the store is written under inference mode only (its tensors are inference tensors:
        # no autograd bookkeeping), whichever mode the caller runs in
        if slots < 1 or headroom < 0:
            raise ValueError(f"slots must be >= 1 and headroom >= 0, got {slots}, {headroom}")
        self.initial_slots = slots
        self.headroom = headroom  # entries reserved past a new request's length
        self.keys: list[torch.Tensor] = []  # per layer [slots, kv_heads, capacity, head_dim]
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []  # per live slot
        self.owners: list[Hashable] = []  # per live slot
        self.slot_of: dict[Hashable, int] = {}
        self.growths = 0  # times the store was reallocated (tests, stats)

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    @property
    def live(self) -> int:
        return len(self.owners)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.slot_of

    @torch.inference_mode()
    def admit(self, key: Hashable, cache) -> None:
        """Copy ``cache`` (a prefilled transformers ``DynamicCache``) into a free slot for
        ``key``."""
        if key in self.slot_of:
            raise ValueError(f"{key!r} already holds a slot")
        layers = cache.layers
        length = layers[0].keys.shape[-2]
        if not self.keys:
            self._allocate(layers, length)
        elif len(layers) != len(self.keys):
            raise ValueError(f"a cache of {len(layers)} layers, the store has {len(self.keys)}")
        self.reserve(self.live + 1, length + self.headroom)
        slot = self.live
        for layer, keys, values in zip(layers, self.keys, self.values, strict=True):
            keys[slot, :, :length].copy_(layer.keys[0])
            values[slot, :, :length].copy_(layer.values[0])
        self.lengths.append(length)
        self.owners.append(key)
        self.slot_of[key] = slot

    @torch.inference_mode()
    def release(self, key: Hashable) -> None:
        """Free ``key``'s slot (nothing if it holds none); the last live slot moves into it."""
        slot = self.slot_of.pop(key, None)
        if slot is None:
            return
        last = self.live - 1
        if slot != last:
            length = self.lengths[last]
            for keys, values in zip(self.keys, self.values, strict=True):
                keys[slot, :, :length].copy_(keys[last, :, :length])
                values[slot, :, :length].copy_(values[last, :, :length])
            self.lengths[slot], self.owners[slot] = length, self.owners[last]
            self.slot_of[self.owners[slot]] = slot
        self.lengths.pop()
        self.owners.pop()

    def length(self, key: Hashable) -> int:
        return self.lengths[self.slot_of[key]]

    def cut(self, key: Hashable, length: int) -> None:
        """Keep ``key``'s first ``length`` entries (the rest become stale: never attended)."""
        slot = self.slot_of[key]
        if not 0 <= length <= self.lengths[slot]:
            raise ValueError(f"cannot cut {self.lengths[slot]} entries to {length}")
        self.lengths[slot] = length

    def entries(self, key: Hashable, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of ``key``'s valid keys and values in ``layer``, ``[1, kv_heads, length, D]``."""
        slot, length = self.slot_of[key], self.length(key)
        return (
            self.keys[layer][slot : slot + 1, :, :length],
            self.values[layer][slot : slot + 1, :, :length],
        )

    @torch.inference_mode()
    def reserve(self, slots: int, capacity: int) -> None:
        """At least ``slots`` slots of ``capacity`` entries: doubled (copying the store) until
        they fit."""
        if not self.keys:
            raise RuntimeError("reserve() before the first admission: the store has no layers")
        new_slots, new_capacity = max(self.slots, 1), max(self.capacity, 1)
        while new_slots < slots:
            new_slots *= 2
        while new_capacity < capacity:
            new_capacity *= 2
        if (new_slots, new_capacity) == (self.slots, self.capacity):
            return
        old_slots, old_capacity = self.slots, self.capacity
        grown = []  # every new tensor first: an allocation failure leaves the store as it was
        for store in (self.keys, self.values):
            layers = []
            for old in store:
                heads, dim = old.shape[1], old.shape[3]
                new = old.new_zeros(new_slots, heads, new_capacity, dim)
                new[:old_slots, :, :old_capacity].copy_(old)
                layers.append(new)
            grown.append(layers)
        self.keys, self.values = grown
        self.growths += 1

    def _allocate(self, layers, length: int) -> None:
        """The first admission: a store shaped like the prefill's layers."""
        capacity = _power_of_two(length + self.headroom)
        for layer in layers:
            _, heads, _, dim = layer.keys.shape
            self.keys.append(layer.keys.new_zeros(self.initial_slots, heads, capacity, dim))
            self.values.append(layer.values.new_zeros(self.initial_slots, heads, capacity, dim))


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class _StepCache:
    """What one batched forward's decoder sees as its cache: slots ``lo .. lo + rows - 1`` of
    the store, each row writing its ``width`` new entries at its own length and attending to the
    first ``seen`` entries of its slot (the mask says which are its own)."""

    def __init__(self, store: BatchedDraftCache, lo: int, lengths: list[int], width: int):
        device = store.keys[0].device
        rows = len(lengths)
        self.store, self.span = store, slice(lo, lo + rows)
        self.slot_index = torch.arange(lo, lo + rows, device=device)[:, None]  # [rows, 1]
        starts = torch.tensor(lengths, device=device)[:, None]
        self.entry_index = starts + torch.arange(width, device=device)  # [rows, width]
        self.past = max(lengths)
        self.seen = self.past + width

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the new ``[rows, kv_heads, width, D]`` entries in place; return the views the
        attention reads, ``[rows, kv_heads, seen, D]``."""
        out = []
        for store, new in ((self.store.keys, keys), (self.store.values, values)):
            layer = store[layer_idx]
            layer[self.slot_index, :, self.entry_index] = new.transpose(1, 2).to(layer.dtype)
            out.append(layer[self.span, :, : self.seen])
        return out[0], out[1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.past


@torch.inference_mode()
def draft_chains(
    store: BatchedDraftCache,
    keys: list[Hashable],
    sides: list[Side],
    pending: list[list[int]],
    k: int,
) -> list[list[int]]:
    """For each request ``r`` (its slot ``keys[r]`` in ``store``; ``sides[r]`` gives its model,
    vocabulary settings and ``next_pos``), feed ``pending[r]`` (not empty) after its cached
    entries and draft ``k`` greedy tokens after it. Each slot then holds its pending tokens and
    the first ``k - 1`` drafted ones (the last is never fed), as with :func:`draft_tree` on a
    chain; ``next_pos`` is left where it was (the caller moves it, as it does after
    ``draft_tree``)."""
    if not keys:
        return []
    if any(not p for p in pending):
        raise ValueError("every request needs at least one pending token")
    if not len(keys) == len(sides) == len(pending) or len(set(keys)) != len(keys):
        raise ValueError("keys, sides and pending must be as long, keys distinct")
    slots = [store.slot_of[key] for key in keys]
    chains: list[list[int]] = [[] for _ in keys]
    feed = [list(p) for p in pending]
    offsets = [0] * len(keys)  # tokens each request was fed in this call
    for step in range(k):
        last = _forward(store, slots, sides, feed, offsets)
        for r, token in enumerate(last.argmax(-1).tolist()):
            chains[r].append(token)
            offsets[r] += len(feed[r])
        if step + 1 < k:
            feed = [[c[-1]] for c in chains]
    return chains


def _forward(
    store: BatchedDraftCache,
    slots: list[int],
    sides: list[Side],
    feed: list[list[int]],
    offsets: list[int],
) -> torch.Tensor:
    """One forward of every request's ``feed`` tokens after its slot's entries, over the span of
    the step's slots; returns the presented logits of each request's last fed token ``[R, V]``.
    The slots' lengths grow by what each was fed."""
    first = sides[0]
    lo, hi = min(slots), max(slots)
    rows, width = hi - lo + 1, max(len(f) for f in feed)
    lengths = store.lengths[lo : hi + 1]
    store.reserve(store.live, max(lengths) + width)
    counts = [0] * rows  # tokens each row of the span is fed (0: a placeholder row)
    ids = [[PLACEHOLDER_ID] * width for _ in range(rows)]
    starts = torch.zeros(rows, first.next_pos.shape[0], dtype=torch.long)
    for side, slot, f, off in zip(sides, slots, feed, offsets, strict=True):
        row = slot - lo
        fed = side.feedable(f)
        ids[row] = fed + [fed[-1]] * (width - len(fed))  # padding: never seen, outputs unused
        counts[row] = len(f)
        starts[row] = side.next_pos + off
    embeds = first.embed(torch.tensor(ids, device=first.embed.weight.device)).to(first.device)
    pos = (starts[:, :, None] + torch.arange(width)).to(first.device)  # [rows, P, width]
    pos = pos.permute(1, 0, 2) if first.mrope else pos[:, 0, :]  # [P, rows, width] / [rows, w]
    cache = _StepCache(store, lo, lengths, width)
    mask = _step_mask(lengths, counts, width, cache.seen, embeds.dtype, store.keys[0].device)
    picked = torch.tensor([slot - lo for slot in slots])
    last = torch.tensor([len(f) - 1 for f in feed])
    index = torch.zeros(rows, dtype=torch.long)
    index[picked] = last
    with attention_plan(BasePlan()):  # the model's own attention, with the explicit mask
        logits = decoder_forward(
            first.decoder, first.lm_head, cache, embeds, pos, mask, logits_rows=index
        )
    for side, slot, f in zip(sides, slots, feed, strict=True):
        store.lengths[slot] += len(f)
        side.forwards += 1
    return first.present(logits[picked.to(logits.device), 0])


def _step_mask(
    lengths: list[int], counts: list[int], width: int, seen: int, dtype, device
) -> torch.Tensor:
    """Additive ``[rows, 1, width, seen]``: 0 where a query sees a key, the dtype's minimum
    elsewhere. Row ``r``'s query ``j < counts[r]`` sees its ``lengths[r]`` entries and its new
    ones up to ``j`` (written from entry ``lengths[r]`` on); a padding query sees only its own
    new entry."""
    length = torch.tensor(lengths, device=device)[:, None, None]  # [rows, 1, 1]
    count = torch.tensor(counts, device=device)[:, None, None]
    query = torch.arange(width, device=device)[None, :, None]  # [1, width, 1]
    key = torch.arange(seen, device=device)[None, None, :]  # [1, 1, seen]
    own = length + query  # where each query's own entry is written
    visible = (key <= own) & ((query < count) | (key == own))
    mask = torch.zeros(visible.shape, dtype=dtype, device=device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]
