"""specvlm.drafting: the per-tree drafting plan, and drafting on the device against drafting
level by level (the drafting loop itself is covered by the equality tests of
test_accelerate.py)."""

import pytest
import torch

import specvlm
from specvlm.attention import routed_attention
from specvlm.drafting import DraftPlan, draft_tree, draft_tree_on_device
from specvlm.speculation import draft_prefill
from specvlm.trees import Tree, chain, default_tree
from tests import tiny_models as tm


def test_plan_of_a_tree():
    tree = Tree.from_paths([[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]])
    plan = DraftPlan.of(tree)
    assert plan.top_k == 2
    assert plan.levels == ((), (0, 1), (2, 3, 4), (5,))
    assert plan.counts == (0, 2, 5, 6)
    anc = tree.ancestor_mask()
    assert plan.visible[0] is None
    assert torch.equal(plan.visible[1], anc[[0, 1]][:, :2])
    assert torch.equal(plan.visible[2], anc[[2, 3, 4]][:, :5])
    assert torch.equal(plan.visible[3], anc[[5]][:, :6])  # one node, but not a chain level
    assert plan.cuts[0] is None and plan.cuts[3] is tree
    assert [c.size for c in plan.cuts[1:]] == [2, 5, 6]
    assert plan.parent_rows[0] is None and plan.ranks[0] is None
    assert plan.parent_rows[1].tolist() == [0, 0] and plan.ranks[1].tolist() == [0, 1]
    assert plan.parent_rows[2].tolist() == [0, 0, 1] and plan.ranks[2].tolist() == [0, 1, 0]
    assert plan.parent_rows[3].tolist() == [0] and plan.ranks[3].tolist() == [0]


def test_plan_of_a_chain_has_only_causal_levels():
    plan = DraftPlan.of(chain(4))
    assert plan.levels == ((), (0,), (1,), (2,), (3,)) and plan.counts == (0, 1, 2, 3, 4)
    assert all(v is None for v in plan.visible)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen3_vl"])
def test_drafting_on_the_device_reads_the_host_once_per_step(family, monkeypatch):
    """The same proposals as level-by-level drafting (whose host reads are one per drafted
    level), with one read of a device tensor per step: a sync counter on ``Tensor.tolist``
    (the only way drafting reads the device)."""
    target, draft = tm.make_pair(family, seed=0)
    draft = tm.make_copy_draft(target)  # proposals the target accepts: long pending chains
    fam = specvlm.families.family_of(draft, "draft")
    inputs = tm.make_inputs(family, target, seed=4)
    keep = torch.ones(inputs["input_ids"].shape[1], dtype=torch.bool)
    plan = DraftPlan.of(default_tree())
    reads = []
    real = torch.Tensor.tolist

    def counted(tensor):
        reads.append(tuple(tensor.shape))
        return real(tensor)

    with torch.no_grad(), routed_attention(fam.decoder(draft)):
        sides = [draft_prefill(fam, draft, inputs, keep, "original", 128) for _ in range(2)]
        for pending in ([5], [7, 9]):
            monkeypatch.setattr(torch.Tensor, "tolist", counted)
            reads.clear()
            level_by_level = draft_tree(sides[0], plan, pending)
            by_level = len(reads)
            reads.clear()
            on_device = draft_tree_on_device(sides[1], plan, pending)
            monkeypatch.setattr(torch.Tensor, "tolist", real)
            assert on_device.tokens == level_by_level.tokens
            assert on_device.tree is level_by_level.tree is plan.tree
            assert on_device.prefix_len == level_by_level.prefix_len
            assert on_device.root_pos.tolist() == level_by_level.root_pos.tolist()
            assert by_level == plan.tree.depth and reads == [(plan.tree.size,)]
            for side in sides:  # keep the first level, as a commit of that path would
                side.keep(level_by_level.prefix_len, [0])
    with pytest.raises(ValueError, match="top-k"):
        draft_tree_on_device(sides[1], plan, [5], min_confidence=0.5)
