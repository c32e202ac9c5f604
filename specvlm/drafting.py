"""Tree expansion by the draft: one forward for the pending chain, then one per tree level."""

from __future__ import annotations

import torch

from specvlm.attention import AttentionPlan
from specvlm.runner import Side, ones_mask
from specvlm.trees import Tree


def draft_tree(draft: Side, tree: Tree, pending: list[int]) -> tuple[list[int], int, torch.Tensor]:
    """Propose a token for every node of ``tree``.

    ``pending``: tokens the draft has not processed yet, the last one being the tree's root (the
    last emitted token). They are fed as a causal chain; the root's top-k tokens become the
    depth-1 nodes, and each level ``d < depth`` is then fed with a mask letting each node see
    the prefix and its own ancestors, its top-k giving the level ``d + 1`` nodes (node path
    ``[..., r]`` takes its parent's rank-``r`` token). The deepest level is never fed.

    Returns ``(node_tokens, prefix_len, root_pos)``: the draft cache then holds ``prefix_len``
    entries (up to the root) followed by the fed nodes in node order.
    """
    top_k = tree.max_rank() + 1
    base = draft.length
    logits = draft.step(
        pending, torch.arange(len(pending)), AttentionPlan(),
        ones_mask(base + len(pending), draft.device), slice(len(pending) - 1, len(pending)),
    )  # fmt: skip
    root_pos = draft.next_pos + len(pending) - 1
    prefix_len = base + len(pending)
    children = {-1: torch.topk(logits[0, -1], top_k).indices.tolist()}
    node_tokens = [0] * tree.size
    ancestors = tree.ancestor_mask()
    for level in range(1, tree.depth + 1):
        for i in tree.nodes_at_depth(level):
            node_tokens[i] = children[tree.parents[i]][tree.paths[i][-1]]
        if level == tree.depth:
            break
        nodes = tree.nodes_at_depth(level)
        seen = [i for i in range(tree.size) if tree.depths[i] <= level]  # fed so far, in order
        visible = ancestors[nodes][:, seen]
        if len(nodes) == 1 and bool(visible.all()):
            # A chain level: the node sees everything before it; plain causal attention.
            plan, mask = AttentionPlan(), ones_mask(prefix_len + len(seen), draft.device)
        else:
            mask = torch.ones(1, 1, len(nodes), prefix_len + len(seen), dtype=torch.bool)
            mask[0, 0, :, prefix_len:] = visible
            mask = mask.to(draft.device)
            plan = AttentionPlan(mode="masked", mask=mask)
        logits = draft.step(
            [node_tokens[i] for i in nodes], torch.full((len(nodes),), level), plan, mask,
            slice(None), start=root_pos,
        )  # fmt: skip
        top = torch.topk(logits[0], top_k, dim=-1).indices.tolist()
        for row, node in enumerate(nodes):
            children[node] = top[row]
    return node_tokens, prefix_len, root_pos


def fed_nodes(tree: Tree) -> list[int]:
    """Nodes the draft feeds during :func:`draft_tree` (all but the deepest level), in order."""
    return [i for i, d in enumerate(tree.depths) if d < tree.depth]
