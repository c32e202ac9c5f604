"""Dynamic draft trees (``accelerate(tree="dynamic")``), in the manner of EAGLE-2: the tree is
shaped per step by the draft's own confidence instead of fixed in advance.

One drafting step:

1. The pending chain is fed; the root's top-``top_k`` tokens are the depth-1 candidates.
2. Level by level, down to ``depth``: the ``width`` candidates of the deepest level with the
   highest path probability (the product of the draft's probabilities from the root), stop
   tokens left out, are fed in one forward, each seeing the prefix and its own ancestors; each
   one's top-``top_k`` tokens become the next level's candidates.
3. Rerank: of every candidate drafted, the ``budget`` with the highest path probability form the
   tree the target verifies. A path probability never grows down a path, and ties go to the
   shallower node, so every chosen node's parent is chosen too.

The verified tree is an ordinary :class:`~specvlm.trees.Tree` of rank paths (a node's rank is
its token's rank among its parent's top-``top_k``); the proposal also says where each fed node
sits in the draft's cache (``Proposal.draft_slots``), since the cache holds every expanded
candidate, chosen or not, in the order they were fed. Verification and acceptance are the
static tree's: the candidates are a deterministic function of the draft's state, so greedy
output is the target's and sampled output follows the target's distribution (top-k children).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from specvlm.attention import MaskedPlan
from specvlm.drafting import Proposal, feed_pending
from specvlm.side import Side
from specvlm.trees import Tree


@dataclass(frozen=True)
class DynamicTree:
    """The shape limits of a dynamic tree: ``budget`` nodes verified per step, at most
    ``depth`` levels, ``width`` candidates expanded per level, ``top_k`` children each."""

    budget: int = 32
    depth: int = 6
    width: int = 8
    top_k: int = 8

    def __post_init__(self):
        for name in ("budget", "depth", "width", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DynamicTree.{name} must be a positive int, got {value!r}")
        if self.budget > 256:
            raise ValueError(f"DynamicTree.budget must be at most 256, got {self.budget}")

    @property
    def size(self) -> int:
        """The verification budget (``last_stats.tree_size``; a step verifies at most
        :attr:`most_verified` nodes)."""
        return self.budget

    @property
    def most_fed(self) -> int:
        """The most candidates one step feeds the draft (at most ``width`` at each level above
        the deepest, and the root's ``top_k`` at the first): what a step may add to the draft's
        cache, where the target's takes at most :attr:`most_verified`."""
        return sum(self.level_widths)

    @property
    def most_verified(self) -> int:
        """The most nodes a step verifies: the budget, or every candidate drafted where there
        are fewer (``top_k`` children for the root and for each expanded one)."""
        return min(self.budget, self.top_k * (1 + sum(self.level_widths)))

    @property
    def level_widths(self) -> tuple[int, ...]:
        """The most candidates each level above the deepest feeds (the first: at most the
        root's ``top_k``)."""
        return tuple(
            min(self.width, self.top_k) if d == 1 else self.width for d in range(1, self.depth)
        )

    def max_rank(self) -> int:
        """Largest top-k rank a node may have: the draft needs its top ``top_k``."""
        return self.top_k - 1


@dataclass
class _Candidate:
    path: tuple[int, ...]  # ranks from the root
    token: int
    log_prob: float  # of the path: the sum of the draft's log-probabilities along it
    ancestors: tuple[int, ...]  # cache slots of the fed ancestors
    slot: int | None = None  # cache slot once fed (offset after the prefix)


def _children(logits: torch.Tensor, top_k: int, parents: list[_Candidate | None]):
    """The top-``top_k`` children of each row's node (``None``: the root)."""
    log_probs, tokens = torch.log_softmax(logits.float(), dim=-1).topk(top_k, dim=-1)
    log_probs, tokens = log_probs.tolist(), tokens.tolist()  # one read from the device
    out = []
    for row, parent in enumerate(parents):
        base = 0.0 if parent is None else parent.log_prob
        path = () if parent is None else parent.path
        seen = () if parent is None else parent.ancestors + (parent.slot,)
        for rank, (log_p, token) in enumerate(zip(log_probs[row], tokens[row], strict=True)):
            if log_p == -math.inf:  # beyond the vocabulary
                continue
            out.append(_Candidate(path + (rank,), token, base + log_p, seen))
    return out


def draft_dynamic(
    draft: Side,
    spec: DynamicTree,
    pending: list[int],
    stop_tokens: frozenset[int] = frozenset(),
    min_confidence: float = 0.0,
    pick=None,
) -> Proposal:
    """Draft one step's dynamic tree (the module docstring); the signature of
    :func:`specvlm.drafting.draft_tree`, whose ``min_confidence`` and ``pick`` do not apply
    (the rerank is the confidence cut; children are the draft's top-k)."""
    if pick is not None or min_confidence > 0:
        raise ValueError("a dynamic tree takes the draft's top-k children, with no confidence cut")
    logits, root_pos, prefix_len = feed_pending(draft, pending)
    frontier = _children(logits[0, -1:], spec.top_k, [None])
    drafted = list(frontier)
    fed = 0
    for level in range(1, spec.depth):
        open_ = [c for c in frontier if c.token not in stop_tokens]
        expand = sorted(open_, key=lambda c: -c.log_prob)[: spec.width]
        if not expand:
            break
        for i, candidate in enumerate(expand):
            candidate.slot = fed + i
        fed += len(expand)
        mask = torch.ones(1, 1, len(expand), prefix_len + fed, dtype=torch.bool)
        mask[0, 0, :, prefix_len:] = False
        for row, candidate in enumerate(expand):
            mask[0, 0, row, [prefix_len + s for s in candidate.ancestors + (candidate.slot,)]] = (
                True
            )
        mask = mask.to(draft.device)
        logits = draft.step(
            [c.token for c in expand],
            torch.full((len(expand),), level),
            MaskedPlan(mask),
            mask,
            slice(None),
            start=root_pos,
        )
        frontier = _children(logits[0], spec.top_k, expand)
        drafted.extend(frontier)
    chosen = sorted(drafted, key=lambda c: (-c.log_prob, len(c.path), c.path))[: spec.budget]
    tree = Tree.from_paths([c.path for c in chosen])
    by_path = {c.path: c for c in chosen}
    nodes = [by_path[path] for path in tree.paths]
    return Proposal(
        tree,
        [c.token for c in nodes],
        prefix_len,
        root_pos,
        draft_slots=tuple(c.slot for c in nodes),
    )
