"""Verification by the target, and what both caches keep afterwards.

:func:`verify_tree` feeds the root and every drafted node in one target forward (tree
attention) and lets a ``decide`` function pick the accepted path and the bonus token from the
target's logits (greedy or sampled: :mod:`specvlm.sampler`). :func:`plan_commit` is the index
arithmetic of what each cache keeps and where each side continues; it is pure, so it is tested on
toy trees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from specvlm.attention import TreePlan
from specvlm.drafting import Proposal
from specvlm.side import Side, ones_mask
from specvlm.trees import Tree


@dataclass(frozen=True)
class Verdict:
    """The target's answer to a proposal: the accepted node indices (a path from the root, in
    order) and the target's own next token after the last of them."""

    accepted: list[int]
    bonus: int

    def tokens(self, proposal: Proposal) -> list[int]:
        """The tokens this step emits: the accepted path, then the bonus."""
        return [proposal.tokens[a] for a in self.accepted] + [self.bonus]


def verify_mask(tree: Tree) -> torch.Tensor:
    """Bool ``[N + 1, N + 1]``: the root, then the nodes, each seeing the root and its path."""
    n = tree.size
    mask = torch.zeros(n + 1, n + 1, dtype=torch.bool)
    mask[:, 0] = True
    mask[1:, 1:] = tree.ancestor_mask()
    return mask


# decide(proposal, logits [N + 1, V]) -> Verdict; row 0 is the root's logits, row i + 1 node i's
Decide = Callable[[Proposal, torch.Tensor], Verdict]


def verify_tree(
    target: Side, proposal: Proposal, full_mask: torch.Tensor, root: int, decide: Decide
) -> Verdict:
    """Feed ``[root, *proposal.tokens]`` (positions: next + depth) with tree attention;
    ``full_mask`` is :func:`verify_mask` of the plan's whole tree (the proposal's tree is a cut of
    it, so its first ``N + 1`` rows and columns). The target cache then holds the root and all
    nodes after its previous ``target.length`` entries."""
    n = proposal.tree.size + 1
    plan = TreePlan(full_mask[:n, :n].to(target.device))
    logits = target.step(
        [root, *proposal.fed_tokens()],
        torch.tensor([0, *proposal.tree.depths]),
        plan,
        ones_mask(target.length + n, target.device),
        slice(None),
    )
    return decide(proposal, logits[0])


@dataclass(frozen=True)
class Commit:
    """What the caches keep after a verification, relative to where the step started.

    The target was fed the root and the ``N`` nodes after its ``base`` entries: it keeps
    ``target_keep`` (offsets from ``base``: the root and the accepted nodes) and its next token
    is ``target_advance`` positions further. The draft fed every node above the deepest drafted
    level, in node order, after its ``prefix_len`` entries (so a fed node's offset is its index):
    it keeps ``draft_keep`` and continues ``draft_advance`` positions after the root (a dynamic
    tree says where each fed node is: ``Proposal.draft_slots``). ``pending`` are the tokens the
    draft has not processed yet: the last accepted node if it was never fed, then the bonus,
    the last one being the next step's root."""

    target_keep: list[int]
    target_advance: int
    draft_keep: list[int]
    draft_advance: int
    pending: list[int]


def plan_commit(proposal: Proposal, verdict: Verdict) -> Commit:
    tree = proposal.tree
    accepted = verdict.accepted
    if proposal.draft_slots is None:  # a static tree: the levels above the deepest were fed
        slots = [i if d < tree.depth else None for i, d in enumerate(tree.depths)]
    else:  # a dynamic tree: the expanded candidates, wherever they are in the cache
        slots = list(proposal.draft_slots)
    fed = [slots[a] for a in accepted if slots[a] is not None]
    unfed = [proposal.tokens[a] for a in accepted if slots[a] is None]
    if any(slots[a] is None for a in accepted[:-1]):
        raise AssertionError("an accepted node below an unfed one: the draft never drafted it")
    return Commit(
        target_keep=[0] + [1 + a for a in accepted],
        target_advance=1 + len(accepted),
        draft_keep=fed,
        draft_advance=1 + len(fed),
        pending=unfed + [verdict.bonus],
    )


def apply_commit(target: Side, target_base: int, draft: Side, proposal: Proposal, commit: Commit):
    """Both caches keep only the accepted path; both sides' next positions move on."""
    commit_target(target, target_base, commit)
    commit_draft(draft, proposal, commit)


def commit_target(target: Side, target_base: int, commit: Commit) -> None:
    """The target's cache keeps the root and the accepted nodes; its next position moves on."""
    target.keep(target_base, commit.target_keep)
    target.next_pos = target.next_pos + commit.target_advance


def commit_draft(draft: Side, proposal: Proposal, commit: Commit) -> None:
    """The draft's cache keeps the accepted nodes it was fed; its next position moves on."""
    draft.keep(proposal.prefix_len, commit.draft_keep)
    draft.next_pos = proposal.root_pos + commit.draft_advance
