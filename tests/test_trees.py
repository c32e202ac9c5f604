"""specvlm.trees: static trees, masks and greedy acceptance."""

import pytest
import torch

from specvlm.sampler import accept_greedy as greedy_accept
from specvlm.trees import Tree, build_tree, chain, default_tree, tree_of_size


def test_from_paths_orders_by_depth_and_links_parents():
    tree = Tree.from_paths([[0, 0], [1], [0], [0, 1], [0, 0, 0]])
    assert tree.paths == ((0,), (1,), (0, 0), (0, 1), (0, 0, 0))
    assert tree.parents == (-1, -1, 0, 0, 2)
    assert tree.depths == (1, 1, 2, 2, 3)
    assert tree.depth == 3 and tree.size == 5 and tree.max_rank() == 1
    assert tree.nodes_at_depth(2) == [2, 3]


def test_ancestor_mask():
    tree = Tree.from_paths([[0], [1], [0, 0], [0, 0, 0]])
    expected = torch.tensor(
        [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(tree.ancestor_mask(), expected)


@pytest.mark.parametrize(
    "paths,error,match",
    [
        ([], ValueError, "at least one node"),
        ([[0], [0]], ValueError, "unique"),
        ([[0, 1]], ValueError, "no parent"),
        ([[0], []], ValueError, "non-empty"),
        ([[0], [-1]], ValueError, "non-negative"),
        ("abc", TypeError, "sequence of rank paths"),
    ],
)
def test_bad_trees(paths, error, match):
    with pytest.raises(error, match=match):
        Tree.from_paths(paths)


def test_chain():
    tree = chain(4)
    assert tree.paths == ((0,), (0, 0), (0, 0, 0), (0, 0, 0, 0))
    assert torch.equal(tree.ancestor_mask(), torch.ones(4, 4, dtype=torch.bool).tril())
    with pytest.raises(ValueError):
        chain(0)


def test_default_tree_shape():
    tree = default_tree()
    assert 25 <= tree.size <= 60
    assert tree.depth in (5, 6)
    assert tree.paths[0] == (0,)


def test_build_tree_prefers_likely_paths():
    # values: (0)=.9, (0,0)=.81, (0,0,0)=.73, (0,0,0,0)=.66 all beat (1)=.05
    tree = build_tree([0.9, 0.05], num_nodes=4, max_depth=10)
    assert tree.paths == ((0,), (0, 0), (0, 0, 0), (0, 0, 0, 0))
    # values: (0)=.5, (1)=.4, (0,0)=.25 beat (0,1)=(1,0)=.2
    assert build_tree([0.5, 0.4], 3, 10).paths == ((0,), (1,), (0, 0))
    assert build_tree([0.9], 10, 3).paths == ((0,), (0, 0), (0, 0, 0))  # capped by max_depth


def test_greedy_accept_follows_matching_children():
    tree = Tree.from_paths([[0], [1], [0, 0], [0, 1], [1, 0]])
    node_tokens = torch.tensor([5, 6, 7, 8, 9])
    # target: after root -> 5 (node 0), after node 0 -> 8 (node 3), after node 3 -> 42 (bonus)
    target = torch.tensor([5, 8, 1, 1, 42, 1])
    assert greedy_accept(tree, node_tokens, target) == ([0, 3], 42)


def test_greedy_accept_nothing_matches():
    tree = chain(3)
    assert greedy_accept(tree, torch.tensor([1, 2, 3]), torch.tensor([9, 2, 3, 4])) == ([], 9)


def test_greedy_accept_full_chain():
    tree = chain(3)
    assert greedy_accept(tree, torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3, 4])) == (
        [0, 1, 2],
        4,
    )


def test_cut_keeps_the_shallow_nodes_and_their_numbering():
    tree = Tree.from_paths([[0], [1], [0, 0], [0, 1], [0, 0, 0]])
    two = tree.cut(2)
    assert two.paths == ((0,), (1,), (0, 0), (0, 1)) and two.parents == (-1, -1, 0, 0)
    assert two.depth == 2 and two == Tree.from_paths([[0], [1], [0, 0], [0, 1]])
    assert torch.equal(two.ancestor_mask(), tree.ancestor_mask()[:4, :4])
    assert tree.cut(1).paths == ((0,), (1,))
    assert tree.cut(3) is tree and tree.cut(7) is tree
    with pytest.raises(ValueError, match="cut depth"):
        tree.cut(0)


def test_tree_of_size_shares_the_default_prior():
    assert tree_of_size(48) == default_tree()
    sizes = (1, 4, 8, 24, 48, 64)
    trees = [tree_of_size(n) for n in sizes]
    assert [t.size for t in trees] == list(sizes)
    assert all(t.depth <= 6 for t in trees)
    assert tree_of_size(4) == chain(4)  # the demo's CPU tree
    for small, big in zip(trees[:-1], trees[1:], strict=True):  # each extends the one before
        assert set(small.paths) <= set(big.paths)
    # ranks 5+ exist only in the 10-value prior that default_tree uses
    assert tree_of_size(64).max_rank() == 5
    assert tree_of_size(20, max_depth=2).depth == 2
