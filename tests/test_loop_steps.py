"""The index arithmetic of one speculation step, on toy sides (no model): what drafting feeds and
proposes, what verification feeds, and what both caches keep afterwards."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from specvlm.attention import BasePlan, MaskedPlan, TreePlan
from specvlm.decoder import keep_cache_entries
from specvlm.drafting import DraftPlan, Proposal, draft_tree
from specvlm.sampler import accept_greedy as greedy_accept
from specvlm.trees import Tree, chain
from specvlm.verify import Verdict, apply_commit, plan_commit, verify_mask, verify_tree

V = 50
SMALL = Tree.from_paths([[0], [1], [0, 0], [0, 1], [1, 0]])  # nodes 0,1 | 2,3 (of 0), 4 (of 1)


class ToySide:
    """Stands in for :class:`specvlm.side.Side`: records every step; the logits after token
    ``t`` rank ``t + 1, t + 2, ...`` highest (so the rank-``r`` child of ``t`` is ``t + 1 + r``)."""

    def __init__(self, length: int, next_pos: int):
        self.cache_len = length
        self.next_pos = torch.tensor([next_pos])
        self.device = torch.device("cpu")
        self.calls: list[dict] = []
        self.kept: list[tuple[int, list[int]]] = []

    @property
    def length(self) -> int:
        return self.cache_len

    def step(self, tokens, offsets, plan, attention_mask, logits_rows, start=None):
        start = self.next_pos if start is None else start
        self.calls.append(
            dict(
                tokens=list(tokens), pos=(start + offsets).tolist(), plan=plan, mask=attention_mask
            )
        )
        self.cache_len += len(tokens)
        logits = torch.zeros(1, len(tokens), V)
        for row, tok in enumerate(tokens):
            for r in range(5):
                logits[0, row, (tok + 1 + r) % V] = 10.0 - r
        return logits[:, logits_rows]

    def keep(self, start, offsets):
        self.kept.append((start, list(offsets)))
        self.cache_len = start + len(offsets)


def test_draft_tree_feeds_levels_and_picks_ranked_children():
    side = ToySide(length=7, next_pos=7)
    plan = DraftPlan.of(SMALL)
    prop = draft_tree(side, plan, pending=[3, 4])  # 3 not yet processed, 4 is the root
    # depth 1: children of 4 -> 5 (rank 0), 6 (rank 1); depth 2: of 5 -> 6, 7; of 6 -> 7
    assert prop.tokens == [5, 6, 6, 7, 7]
    assert prop.prefix_len == 9 and prop.root_pos.tolist() == [8]
    assert prop.tree == SMALL and prop.draft_probs is None
    first, level1 = side.calls
    assert first["tokens"] == [3, 4] and first["pos"] == [7, 8]
    assert isinstance(first["plan"], BasePlan)
    # level 1 is fed (the deepest level never is): both nodes at depth 1, seeing the prefix and
    # themselves only
    assert level1["tokens"] == [5, 6] and level1["pos"] == [9, 9]
    assert isinstance(level1["plan"], MaskedPlan)
    mask = level1["plan"].mask[0, 0]
    assert mask.shape == (2, 9 + 2)
    assert bool(mask[:, :9].all()) and mask[:, 9:].tolist() == [[True, False], [False, True]]


def test_draft_tree_chain_levels_run_plain_causal():
    side = ToySide(length=4, next_pos=4)
    prop = draft_tree(side, DraftPlan.of(chain(3)), pending=[10])
    assert prop.tokens == [11, 12, 13]
    assert [c["tokens"] for c in side.calls] == [[10], [11], [12]]
    assert [c["pos"] for c in side.calls] == [[4], [5], [6]]
    assert all(isinstance(c["plan"], BasePlan) for c in side.calls)


def test_draft_tree_stops_below_stop_tokens():
    side = ToySide(length=4, next_pos=4)
    prop = draft_tree(side, DraftPlan.of(chain(4)), pending=[10], stop_tokens=frozenset({12}))
    assert prop.tokens == [11, 12] and prop.tree.depth == 2  # cut below the EOS node
    assert len(side.calls) == 2


def test_verify_tree_feeds_root_and_nodes_at_their_depths():
    side = ToySide(length=9, next_pos=9)
    prop = Proposal(SMALL, [5, 6, 6, 7, 7], prefix_len=9, root_pos=torch.tensor([8]))
    seen = {}

    def decide(proposal, logits):
        seen["logits"] = logits
        return Verdict(
            *greedy_accept(proposal.tree, torch.tensor(proposal.tokens), logits.argmax(-1))
        )

    verdict = verify_tree(side, prop, verify_mask(SMALL), root=4, decide=decide)
    (call,) = side.calls
    assert call["tokens"] == [4, 5, 6, 6, 7, 7] and call["pos"] == [9, 10, 10, 11, 11, 11]
    assert isinstance(call["plan"], TreePlan)
    assert call["plan"].tree_mask.tolist() == verify_mask(SMALL).tolist()
    assert seen["logits"].shape == (6, V)
    # after 4 the target wants 5 (node 0), after 5 it wants 6 (node 2), after node 2 (6) it wants 7
    assert verdict == Verdict([0, 2], 7)
    assert verdict.tokens(prop) == [5, 6, 7]


def test_plan_commit_keeps_the_accepted_path():
    prop = Proposal(SMALL, [5, 6, 6, 7, 7], prefix_len=9, root_pos=torch.tensor([8]))
    c = plan_commit(prop, Verdict([1, 4], 99))  # node 1 (depth 1, fed), node 4 (depth 2, not fed)
    assert c.target_keep == [0, 2, 5] and c.target_advance == 3
    assert c.draft_keep == [1] and c.draft_advance == 2
    assert c.pending == [7, 99]
    c = plan_commit(prop, Verdict([], 42))
    assert (c.target_keep, c.target_advance, c.draft_keep, c.draft_advance, c.pending) == (
        [0],
        1,
        [],
        1,
        [42],
    )
    # a tree cut at depth 1: its depth-1 nodes were never fed to the draft
    cut = Proposal(SMALL.cut(1), [5, 6], prefix_len=9, root_pos=torch.tensor([8]))
    c = plan_commit(cut, Verdict([0], 6))
    assert c.draft_keep == [] and c.draft_advance == 1 and c.pending == [5, 6]


def test_apply_commit_moves_both_sides():
    target, draft = ToySide(15, 15), ToySide(11, 11)
    prop = Proposal(SMALL, [5, 6, 6, 7, 7], prefix_len=9, root_pos=torch.tensor([8]))
    commit = plan_commit(prop, Verdict([0, 3], 1))
    apply_commit(target, 9, draft, prop, commit)
    assert target.kept == [(9, [0, 1, 4])] and target.next_pos.tolist() == [18]
    assert draft.kept == [(9, [0])] and draft.next_pos.tolist() == [10]


def test_keep_cache_entries_moves_kept_entries_down():
    cache = DynamicCache()
    for layer in range(2):
        keys = torch.arange(10.0).view(1, 1, 10, 1).expand(1, 2, 10, 3).contiguous() + layer
        cache.update(keys, keys.clone() * -1, layer)
    keep_cache_entries(cache, 4, [0, 2, 5])
    for i, layer in enumerate(cache.layers):
        assert layer.keys.shape == (1, 2, 7, 3)
        assert layer.keys[0, 0, :, 0].tolist() == [x + i for x in [0, 1, 2, 3, 4, 6, 9]]
        assert layer.values[0, 1, :, 2].tolist() == [-(x + i) for x in [0, 1, 2, 3, 4, 6, 9]]
    keep_cache_entries(cache, 3, [])
    assert cache.get_seq_length() == 3
