"""Tree expansion by the draft: one forward for the pending chain, then one per tree level, until
the tree's depth or until no node of a level is worth expanding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specvlm.attention import AttentionPlan
from specvlm.runner import Side, ones_mask
from specvlm.trees import Tree


@dataclass(frozen=True)
class DraftPlan:
    """Everything about a static tree that drafting needs, computed once per ``generate``.

    Nodes are numbered by depth, so the tree cut at depth ``d`` is its first ``counts[d]`` nodes.
    """

    tree: Tree
    top_k: int
    levels: tuple[tuple[int, ...], ...]  # levels[d]: nodes at depth d (levels[0] is empty)
    counts: tuple[int, ...]  # counts[d]: nodes at depth <= d
    # visible[d] (d >= 1): bool [len(levels[d]), counts[d]], node -> node of depth <= d it may
    # see; None where level d is a single node that sees all of them (a chain level).
    visible: tuple[torch.Tensor | None, ...]
    cuts: tuple[Tree | None, ...]  # cuts[d]: the tree cut at depth d (cuts[0] is None)

    @classmethod
    def of(cls, tree: Tree) -> DraftPlan:
        ancestors = tree.ancestor_mask()
        levels: list[tuple[int, ...]] = [()]
        counts = [0]
        visible: list[torch.Tensor | None] = [None]
        for d in range(1, tree.depth + 1):
            nodes = tuple(tree.nodes_at_depth(d))
            levels.append(nodes)
            counts.append(counts[-1] + len(nodes))
            vis = ancestors[list(nodes)][:, : counts[-1]]
            visible.append(None if len(nodes) == 1 and bool(vis.all()) else vis)
        cuts = (None,) + tuple(tree.cut(d) for d in range(1, tree.depth + 1))
        return cls(tree, tree.max_rank() + 1, tuple(levels), tuple(counts), tuple(visible), cuts)


def draft_tree(
    draft: Side,
    plan: DraftPlan,
    pending: list[int],
    stop_tokens: frozenset[int] = frozenset(),
    min_confidence: float = 0.0,
) -> tuple[list[int], int, torch.Tensor]:
    """Propose a token for every node of ``plan.tree``, or of the tree cut at a smaller depth.

    ``pending``: tokens the draft has not processed yet, the last one being the tree's root (the
    last emitted token). They are fed as a causal chain; the root's top-k tokens become the
    depth-1 nodes, and each level ``d`` is then fed with a mask letting each node see the prefix
    and its own ancestors, its top-k giving the level ``d + 1`` nodes (node path ``[..., r]``
    takes its parent's rank-``r`` token). The deepest level is never fed.

    Drafting stops early (the tree is cut after level ``d``) when no node of level ``d`` is worth
    expanding: every one of them is a stop token (EOS: the target ends there if it accepts it),
    or its path's draft probability (product of the draft's softmax along the path) is below
    ``min_confidence``. Either way the output stays exactly the target's; only the work changes.

    Returns ``(node_tokens, prefix_len, root_pos)``; ``len(node_tokens)`` is ``plan.counts[d]``
    for the depth ``d`` reached. The draft cache then holds ``prefix_len`` entries (up to the
    root) followed by the fed nodes (those above the deepest level drafted) in node order.
    """
    tree = plan.tree
    base = draft.length
    logits = draft.step(
        pending, torch.arange(len(pending)), AttentionPlan(),
        ones_mask(base + len(pending), draft.device), slice(len(pending) - 1, len(pending)),
    )  # fmt: skip
    root_pos = draft.next_pos + len(pending) - 1
    prefix_len = base + len(pending)
    probs, tokens = _top(logits[0, -1:], plan.top_k, min_confidence > 0)
    children = {-1: (tokens[0], probs[0])}
    path_prob = {-1: 1.0}
    node_tokens: list[int] = []
    for level in range(1, tree.depth + 1):
        nodes = plan.levels[level]
        for i in nodes:
            parent, rank = tree.parents[i], tree.paths[i][-1]
            toks, ps = children[parent]
            node_tokens.append(toks[rank])
            path_prob[i] = path_prob[parent] * ps[rank]
        if level == tree.depth or not any(
            node_tokens[i] not in stop_tokens and path_prob[i] >= min_confidence for i in nodes
        ):
            break
        vis = plan.visible[level]
        fed = plan.counts[level]
        if vis is None:  # a chain level: the node sees everything before it; plain causal
            step_plan, mask = AttentionPlan(), ones_mask(prefix_len + fed, draft.device)
        else:
            mask = torch.ones(1, 1, len(nodes), prefix_len + fed, dtype=torch.bool)
            mask[0, 0, :, prefix_len:] = vis
            mask = mask.to(draft.device)
            step_plan = AttentionPlan(mode="masked", mask=mask)
        logits = draft.step(
            [node_tokens[i] for i in nodes], torch.full((len(nodes),), level), step_plan, mask,
            slice(None), start=root_pos,
        )  # fmt: skip
        probs, tokens = _top(logits[0], plan.top_k, min_confidence > 0)
        for row, node in enumerate(nodes):
            children[node] = (tokens[row], probs[row])
    return node_tokens, prefix_len, root_pos


def _top(
    logits: torch.Tensor, k: int, with_probs: bool
) -> tuple[list[list[float]], list[list[int]]]:
    """Top-``k`` tokens of each row and, if ``with_probs``, their softmax probabilities (fp32;
    else 1.0: without a confidence threshold the softmax over the vocabulary is not needed),
    as Python lists."""
    if not with_probs:
        tokens = logits.topk(k, dim=-1).indices.tolist()
        return [[1.0] * k for _ in tokens], tokens
    probs, tokens = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return probs.tolist(), tokens.tolist()
