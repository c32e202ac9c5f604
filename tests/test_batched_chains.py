"""specvlm.vllm_plugin.batched: chains for several requests in one forward per position give
what each request's draft gives alone (draft_tree on a chain), caches included."""

from __future__ import annotations

import copy

import pytest
import torch

from specvlm import selectors
from specvlm.drafting import DraftPlan, draft_tree
from specvlm.families import family_of
from specvlm.speculation import draft_prefill, kept_positions
from specvlm.trees import chain
from specvlm.vllm_plugin.batched import draft_chains
from tests import tiny_models as tm

K = 4


def _sides(family: str, frames: list[int], drop_rate: float):
    _, draft = tm.make_pair(family)
    fam = family_of(draft)
    select = selectors.resolve("two_stage", mass=0.4, seed=0)
    sides = []
    for i, t in enumerate(frames):
        inputs = tm.make_inputs(family, draft, frames=t, text_after=3 + i, seed=i)
        layout = fam.video_layout(draft, inputs["input_ids"], inputs)
        scores = torch.rand(layout.num_tokens, generator=torch.Generator().manual_seed(i))
        keep, _ = kept_positions(inputs["input_ids"].shape[1], layout, scores, drop_rate, select)
        vocab = draft.lm_head.weight.shape[0]
        with torch.no_grad():
            sides.append(draft_prefill(fam, draft, inputs, keep, "original", vocab))
    return sides


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_batched_chains_equal_each_requests_own_chain(family, one_thread):
    sides = _sides(family, frames=[2, 3, 1], drop_rate=0.5)
    pending = [[5], [7, 9, 11], [3, 4]]  # different numbers of pending tokens per request
    alone = copy.deepcopy(sides)
    plan = DraftPlan.of(chain(K))
    with torch.no_grad():
        expected = [
            draft_tree(side, plan, p).tokens for side, p in zip(alone, pending, strict=True)
        ]
        got = draft_chains(sides, pending, K)
    assert got == expected
    for mine, theirs in zip(sides, alone, strict=True):
        assert mine.length == theirs.length  # pending + the first K - 1 drafted tokens
        for a, b in zip(mine.cache.layers, theirs.cache.layers, strict=True):
            torch.testing.assert_close(a.keys, b.keys, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(a.values, b.values, rtol=1e-4, atol=1e-5)


def test_a_single_request_and_bad_input(one_thread):
    (side,) = _sides("qwen2_5_vl", frames=[2], drop_rate=0.9)
    alone = copy.deepcopy(side)
    with torch.no_grad():
        expected = draft_tree(alone, DraftPlan.of(chain(2)), [1, 2]).tokens
        assert draft_chains([side], [[1, 2]], 2) == [expected]
    assert draft_chains([], [], 3) == []
    with pytest.raises(ValueError, match="pending"):
        draft_chains([side], [[]], 2)
