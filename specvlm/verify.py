"""Verification by the target: the root and every tree node in one forward, greedy acceptance."""

from __future__ import annotations

import torch

from specvlm.attention import AttentionPlan
from specvlm.runner import Side
from specvlm.trees import Tree, greedy_accept


def verify_mask(tree: Tree) -> torch.Tensor:
    """Bool ``[N + 1, N + 1]``: the root, then the nodes, each seeing the root and its path."""
    n = tree.size
    mask = torch.zeros(n + 1, n + 1, dtype=torch.bool)
    mask[:, 0] = True
    mask[1:, 1:] = tree.ancestor_mask()
    return mask


def verify_tree(
    target: Side,
    tree: Tree,
    tree_mask: torch.Tensor,
    root: int,
    node_tokens: list[int],
    adjust=None,
) -> tuple[list[int], int]:
    """Feed ``[root, *node_tokens]`` (positions: next + depth) with tree attention and accept
    greedily. ``adjust(logits [N + 1, V]) -> logits``: the generation's logits processing (e.g.
    :class:`~specvlm.penalty.RepetitionPenalty`). Returns ``(accepted node indices, bonus
    token)``; the target cache then holds the root and all nodes after its previous
    ``target.length`` entries."""
    base = target.length
    n = tree.size + 1
    mask = torch.ones(1, 1, n, base + n, dtype=torch.bool)
    mask[0, 0, :, base:] = tree_mask
    mask = mask.to(target.device)
    # mask doubles as the plan's explicit mask where tree attention runs as SDPA (CPU)
    plan = AttentionPlan(mode="tree", tree_mask=tree_mask.to(target.device), mask=mask)
    logits = target.step(
        [root, *node_tokens], torch.tensor([0, *tree.depths]), plan, mask, slice(None)
    )
    scores = logits[0].float() if adjust is None else adjust(logits[0])
    choice = scores.argmax(dim=-1)
    return greedy_accept(tree, torch.tensor(node_tokens), choice)
