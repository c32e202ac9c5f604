"""specvlm.vllm_plugin.batched: chains for several requests in one forward per position, over the
persistent batched draft cache, give what each request's draft gives alone (draft_tree on a
chain), caches included: after a rollback, for a subset of the live slots, after a release and
a reuse of its slot, and past the store's first slot count and capacity."""

from __future__ import annotations

import copy

import pytest
import torch

from specvlm import selectors
from specvlm.drafting import DraftPlan, draft_tree
from specvlm.families import family_of
from specvlm.speculation import draft_prefill, kept_positions
from specvlm.trees import chain
from specvlm.vllm_plugin.batched import BatchedDraftCache, draft_chains
from tests import tiny_models as tm

K = 4


def _sides(family: str, frames: list[int], drop_rate: float, seed: int = 0):
    # the tiny pair's target serves as the draft: its layers after the first see the attention's
    # output in their keys and values, so the caches' equality checks the masks too
    draft, _ = tm.make_pair(family)
    fam = family_of(draft)
    select = selectors.resolve("two_stage", mass=0.4, seed=0)
    sides = []
    for i, t in enumerate(frames):
        inputs = tm.make_inputs(family, draft, frames=t, text_after=3 + i, seed=seed + i)
        layout = fam.video_layout(draft, inputs["input_ids"], inputs)
        scores = torch.rand(layout.num_tokens, generator=torch.Generator().manual_seed(i))
        keep, _ = kept_positions(inputs["input_ids"].shape[1], layout, scores, drop_rate, select)
        vocab = draft.lm_head.weight.shape[0]
        with torch.no_grad():
            sides.append(draft_prefill(fam, draft, inputs, keep, "original", vocab))
    return sides


def _admitted(sides, keys, store=None) -> BatchedDraftCache:
    """The store holding each side's prefill under its key; the sides' own caches dropped."""
    store = store or BatchedDraftCache()
    for key, side in zip(keys, sides, strict=True):
        store.admit(key, side.cache)
        side.cache = None
    return store


def _alone(sides, pending, k=K):
    """draft_tree on a chain, request by request (the oracle)."""
    plan = DraftPlan.of(chain(k))
    with torch.no_grad():
        return [draft_tree(side, plan, p).tokens for side, p in zip(sides, pending, strict=True)]


def _assert_same_caches(store, keys, alone):
    # float32 rounding of batched against one-row matrix products, over three layers: ~1e-5;
    # a mask that shows one wrong entry moves them by 1e-2 or more
    for key, side in zip(keys, alone, strict=True):
        assert store.length(key) == side.length
        for layer, own in enumerate(side.cache.layers):
            keys_, values = store.entries(key, layer)
            torch.testing.assert_close(keys_, own.keys, rtol=1e-3, atol=1e-4)
            torch.testing.assert_close(values, own.values, rtol=1e-3, atol=1e-4)


def _rolled_back(store, keys, sides, alone, base, kept):
    """Cut each request back to ``base + kept`` entries, in the store and alone."""
    for key, side, twin, b, n in zip(keys, sides, alone, base, kept, strict=True):
        store.cut(key, b + n)
        twin.keep(b + n, [])
        side.next_pos = twin.next_pos = twin.next_pos + n


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_batched_chains_equal_each_requests_own_chain(family, one_thread):
    sides = _sides(family, frames=[2, 3, 1], drop_rate=0.5)
    alone = copy.deepcopy(sides)
    keys = ["a", "b", "c"]
    base = [side.length for side in sides]
    store = _admitted(sides, keys)
    pending = [[5], [7, 9, 11], [3, 4]]  # a length-1 pending, and longer ones
    expected = _alone(alone, pending)
    with torch.no_grad():
        assert draft_chains(store, keys, sides, pending, K) == expected
    _assert_same_caches(store, keys, alone)  # pending + the first K - 1 drafted tokens
    # vLLM accepted part of each chain: cut back to a shorter prefix, then draft again
    _rolled_back(store, keys, sides, alone, base, kept=[1, 0, 2])
    pending = [[8, 2], [6], [1, 2, 3, 4, 5]]
    expected = _alone(alone, pending)
    with torch.no_grad():
        assert draft_chains(store, keys, sides, pending, K) == expected
    _assert_same_caches(store, keys, alone)
    assert store.growths == 0  # three slots and the headroom fit the first store


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_growth_release_reuse_and_a_subset_of_the_slots(family, one_thread):
    long, short, late = _sides(family, frames=[8, 1, 2], drop_rate=0.0, seed=3)
    alone = copy.deepcopy([long, short, late])
    store = _admitted([long, short], ["long", "short"], BatchedDraftCache(slots=1, headroom=0))
    assert store.slots == 2 and store.growths == 1  # the second request doubled the slots
    capacity = store.capacity
    # a pending chain that cannot fit the capacity: the store doubles it during the forward
    pending = [[4], [1 + i % 50 for i in range(capacity - store.length("short") + 1)]]
    expected = _alone(alone[:2], pending)
    with torch.no_grad():
        assert draft_chains(store, ["long", "short"], [long, short], pending, K) == expected
    assert store.capacity > capacity
    _assert_same_caches(store, ["long", "short"], alone[:2])
    # the long request finishes: the short one moves into slot 0, the new one takes slot 1
    store.release("long")
    store.release("never admitted")  # nothing
    assert store.live == 1 and store.slot_of == {"short": 0}
    _admitted([late], ["late"], store)
    assert store.slot_of == {"short": 0, "late": 1}
    expected = _alone(alone[1:], [[9], [2, 7]])
    with torch.no_grad():
        assert draft_chains(store, ["late", "short"], [late, short], [[2, 7], [9]], K) == [
            expected[1],
            expected[0],
        ]
    _assert_same_caches(store, ["short", "late"], alone[1:])
    # a third request, then a step drafting slots 0 and 2: slot 1 runs as a placeholder row
    again = copy.deepcopy(alone[0])
    _admitted([again], ["again"], store)
    before = [t.clone() for t in store.entries("late", 0)]
    length = store.length("late")
    expected = _alone([alone[1], alone[0]], [[1, 1, 1], [5]], k=2)
    with torch.no_grad():
        got = draft_chains(store, ["short", "again"], [short, again], [[1, 1, 1], [5]], 2)
    assert got == expected
    assert store.length("late") == length
    for now, then in zip(store.entries("late", 0), before, strict=True):
        torch.testing.assert_close(now, then, rtol=0, atol=0)
    _assert_same_caches(store, ["short", "again"], [alone[1], alone[0]])


def test_a_single_request_and_bad_input(one_thread):
    (side,) = _sides("qwen2_5_vl", frames=[2], drop_rate=0.9)
    alone = copy.deepcopy(side)
    store = _admitted([side], ["only"])
    keys_before = store.keys[0]
    (expected,) = _alone([alone], [[1, 2]], k=2)
    with torch.no_grad():
        assert draft_chains(store, ["only"], [side], [[1, 2]], 2) == [expected]
    assert store.keys[0] is keys_before  # written in place
    _assert_same_caches(store, ["only"], [alone])
    assert draft_chains(store, [], [], [], 3) == []
    with pytest.raises(ValueError, match="pending"):
        draft_chains(store, ["only"], [side], [[]], 2)
    with pytest.raises(ValueError, match="distinct"):
        draft_chains(store, ["only", "only"], [side, side], [[1], [1]], 2)
    with pytest.raises(ValueError, match="cut"):
        store.cut("only", store.length("only") + 1)
    with pytest.raises(ValueError, match="already"):
        store.admit("only", alone.cache)
