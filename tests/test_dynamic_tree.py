"""Dynamic draft trees (``accelerate(tree="dynamic")``, specvlm/dynamic_tree.py): the tree each
step verifies, the draft cache it leaves, and the output (greedy: ``target.generate``'s, token
for token, on tiny models of every family; sampling: tests/test_sampling_distribution.py)."""

from __future__ import annotations

import math

import pytest
import torch

import specvlm
from specvlm import speculation
from specvlm.drafting import Proposal
from specvlm.dynamic_tree import DynamicTree, draft_dynamic
from specvlm.trees import Tree
from specvlm.verify import Verdict, plan_commit
from tests import tiny_models as tm

NEW = 16
SHAPES = [DynamicTree(), DynamicTree(budget=5, depth=3, width=2, top_k=3), DynamicTree(1, 1, 1, 1)]

pytestmark = pytest.mark.usefixtures("one_thread", "reference_kernels")

_PAIRS: dict = {}


def pair(family):
    if family not in _PAIRS:
        target, draft = tm.make_pair(family, seed=0)
        _PAIRS[family] = (target, draft, tm.make_copy_draft(target))
    return _PAIRS[family]


def reference(target, inputs):
    with torch.no_grad():
        return target.generate(**inputs, max_new_tokens=NEW, do_sample=False)


@pytest.mark.parametrize("family", tm.FAMILIES)
@pytest.mark.parametrize("shape", SHAPES, ids=["default", "small", "one-node"])
def test_greedy_output_is_the_targets(family, shape):
    target, draft, copy = pair(family)
    for seed, model, drop_rate in ((1, draft, 0.9), (2, copy, 0.0), (3, copy, 0.9)):
        inputs = tm.make_inputs(family, target, seed=seed)
        sd = specvlm.accelerate((target, model), tree=shape, drop_rate=drop_rate)
        assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == (
            reference(target, inputs).tolist()
        )
        stats = sd.last_stats
        assert stats.speculated and stats.tree == shape and stats.tree_size == shape.budget
        assert max(stats.drafted_depths) <= shape.depth


@pytest.fixture
def proposals(monkeypatch):
    """Every proposal the loop drafts with a dynamic tree."""
    seen: list[Proposal] = []

    def recording(*args, **kwargs):
        seen.append(draft_dynamic(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(speculation, "draft_dynamic", recording)
    return seen


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_a_copy_of_the_target_is_accepted_down_its_rank_0_chain(family, proposals):
    """With an exact copy of the target as the draft (whole video), every step accepts the
    tree's rank-0 chain as deep as the tree has it: the draft cache the dynamic commits leave
    (Proposal.draft_slots) is the target's, step after step, which the output alone would not
    show."""
    target, _, copy = pair(family)
    inputs = tm.make_inputs(family, target, seed=4)
    sd = specvlm.accelerate((target, copy), tree="dynamic", drop_rate=0.0)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == reference(target, inputs).tolist()
    lengths = sd.last_stats.accepted_lengths
    assert len(proposals) == len(lengths) > 2
    for proposal, accepted in zip(proposals[:-1], lengths[:-1], strict=True):  # the last: cut
        chain = max(len(p) for p in proposal.tree.paths if set(p) == {0})
        assert accepted == chain + 1


def test_the_most_a_step_feeds_and_verifies(proposals):
    """most_fed / most_verified / level_widths bound what a step feeds the draft and verifies
    (captured steps compile and size their caches by them): reached, never passed."""
    assert DynamicTree().level_widths == (8,) * 5 and DynamicTree().most_fed == 40
    assert DynamicTree().most_verified == 32
    assert DynamicTree(budget=32, depth=1).most_fed == 0
    assert DynamicTree(budget=32, depth=1).most_verified == 8
    narrow = DynamicTree(budget=32, depth=2, width=8, top_k=2)  # 2 candidates, 2 children each
    assert narrow.level_widths == (2,) and narrow.most_fed == 2 and narrow.most_verified == 6
    target, _, copy = pair("llava_onevision")
    inputs = tm.make_inputs("llava_onevision", target, seed=7)
    sd = specvlm.accelerate((target, copy), tree=narrow, drop_rate=0.0)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == reference(target, inputs).tolist()
    sizes = [p.tree.size for p in proposals]
    fed = [sum(slot is not None for slot in p.draft_slots) for p in proposals]
    assert max(sizes) == narrow.most_verified and max(fed) == narrow.most_fed


def test_the_drafted_tree_is_the_most_likely_candidates(proposals):
    """The verified tree: at most ``budget`` nodes, closed under parents, each node's token the
    draft's top-k token of its rank, chosen by path probability; the cache slots name the fed
    candidates."""
    target, draft, _ = pair("llava_onevision")
    inputs = tm.make_inputs("llava_onevision", target, seed=5)
    sd = specvlm.accelerate((target, draft), tree=DynamicTree(budget=7, depth=3, width=2, top_k=3))
    sd.generate(**inputs, max_new_tokens=4)
    proposal = proposals[0]
    tree = proposal.tree
    assert tree.size == 7 and tree.depth <= 3 and tree.max_rank() <= 2
    parents_with_children = {tree.parents[i] for i in range(tree.size)} - {-1}
    slots = proposal.draft_slots
    assert all(slots[p] is not None for p in parents_with_children)  # expanded: fed
    fed = [s for s in slots if s is not None]
    assert len(set(fed)) == len(fed) and all(s < 2 * 2 for s in fed)  # width 2, 2 fed levels


class ToyDraft:
    """A draft side whose next-token distribution depends only on the last token fed
    (``TABLE``); it records what each forward was fed."""

    device = torch.device("cpu")

    def __init__(self, length: int):
        self.length, self.next_pos, self.calls = length, torch.tensor([length]), []

    def step(self, tokens, offsets, plan, attention_mask, logits_rows, start=None):
        tokens = [int(t) for t in tokens]
        self.calls.append({"tokens": tokens, "offsets": offsets.tolist(), "plan": plan})
        self.length += len(tokens)
        return torch.stack([TABLE[t] for t in tokens])[logits_rows][None]


LOG = torch.log
# P(next | last): token 0 -> 1 (0.6), 2 (0.3), 3 (0.1); token 1 -> 0 (0.5), 2 (0.4), 3 (0.1);
# token 2 -> 3 only (the rest impossible: -inf logits); token 3 -> 1 (0.7), 0 (0.3)
TABLE = {
    0: LOG(torch.tensor([0.0, 0.6, 0.3, 0.1])),
    1: LOG(torch.tensor([0.5, 0.0, 0.4, 0.1])),
    2: torch.tensor([-math.inf, -math.inf, -math.inf, 0.0]),
    3: LOG(torch.tensor([0.3, 0.7, 0.0, 0.0])),
}


def test_the_drafted_tree_is_the_budgets_most_likely_candidates():
    """Worked by hand: top-2 children, one candidate expanded per level, three levels.
    Candidates (path probability): [0] 0.6, [1] 0.3; [0] expanded: [0,0] 0.3 (token 0),
    [0,1] 0.24 (token 2); [0,0] expanded: [0,0,0] 0.18, [0,0,1] 0.09. The budget's 5 most
    likely make the tree; [0] and [0,0] were fed (slots 0 and 1), each seeing its fed
    ancestors and itself; token 2's impossible children would be skipped."""
    draft = ToyDraft(length=10)
    spec = DynamicTree(budget=5, depth=3, width=1, top_k=2)
    proposal = draft_dynamic(draft, spec, [0])
    assert proposal.tree.paths == ((0,), (1,), (0, 0), (0, 1), (0, 0, 0))
    assert proposal.tokens == [1, 2, 0, 2, 1]
    assert proposal.draft_slots == (0, None, 1, None, None)
    assert proposal.prefix_len == 11 and int(proposal.root_pos) == 10
    feeds = draft.calls[1:]
    assert [c["tokens"] for c in feeds] == [[1], [0]]
    assert [c["offsets"] for c in feeds] == [[1], [2]]
    assert feeds[1]["plan"].mask[0, 0, 0].tolist() == [True] * 11 + [True, True]
    # a candidate with fewer possible children than top_k: only the possible ones
    draft = ToyDraft(length=3)
    proposal = draft_dynamic(draft, DynamicTree(budget=8, depth=3, width=2, top_k=3), [2])
    assert [p for p in proposal.tree.paths if len(p) == 1] == [(0,)]  # token 3 only
    assert proposal.tokens[:3] == [3, 1, 0]  # then token 3's two possible children
    assert proposal.tree.size == 8 and all(len(p) <= 3 for p in proposal.tree.paths)


def test_plan_commit_finds_the_fed_nodes_by_their_slots():
    tree = Tree.from_paths([[0], [1], [0, 0], [1, 0]])
    # node 0 was fed second, node 1 first; the depth-2 nodes were never fed
    prop = Proposal(tree, [5, 6, 7, 8], 9, torch.tensor([8]), draft_slots=(1, 0, None, None))
    c = plan_commit(prop, Verdict([1, 3], 99))
    assert c.target_keep == [0, 2, 4] and c.draft_keep == [0] and c.pending == [8, 99]
    c = plan_commit(prop, Verdict([0], 42))
    assert c.draft_keep == [1] and c.draft_advance == 2 and c.pending == [42]
    with pytest.raises(AssertionError, match="never drafted"):
        bad = Proposal(tree, [5, 6, 7, 8], 9, torch.tensor([8]), draft_slots=(None,) * 4)
        plan_commit(bad, Verdict([0, 2], 1))


def test_what_a_dynamic_tree_refuses_and_turns_off():
    target, draft, _ = pair("llava_onevision")
    for kwargs, what in [
        ({"overlap": True}, "overlap=True"),
        ({"children": "sampled"}, 'children="sampled"'),
        ({"min_draft_confidence": 0.1}, "min_draft_confidence"),
    ]:
        with pytest.raises(ValueError, match=what):
            specvlm.accelerate((target, draft), tree="dynamic", **kwargs)
    for bad in ({"budget": 0}, {"depth": 1.5}, {"budget": 300}, {"width": True}):
        with pytest.raises(ValueError, match="DynamicTree"):
            DynamicTree(**bad)
    sd = specvlm.accelerate((target, draft), tree="dynamic")
    assert sd.capture == "auto" and sd.overlap is False  # overlap "auto": off
    inputs = tm.make_inputs("llava_onevision", target, seed=6)
    sd.generate(**inputs, max_new_tokens=4)
    assert not sd.last_stats.captured and not sd.last_stats.overlapped
    with pytest.raises(ValueError, match="rank-"):
        specvlm.accelerate((target, draft), tree=DynamicTree(top_k=tm.VOCAB_SIZE + 1))
