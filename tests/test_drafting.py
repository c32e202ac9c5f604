"""specvlm.drafting: the per-tree drafting plan (the drafting loop itself is covered by the
equality tests of test_accelerate.py)."""

import torch

from specvlm.drafting import DraftPlan
from specvlm.trees import Tree, chain


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


def test_plan_of_a_chain_has_only_causal_levels():
    plan = DraftPlan.of(chain(4))
    assert plan.levels == ((), (0,), (1,), (2,), (3,)) and plan.counts == (0, 1, 2, 3, 4)
    assert all(v is None for v in plan.visible)
