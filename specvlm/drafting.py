"""Tree expansion by the draft: one forward for the pending chain, then one per tree level, until
the tree's depth or until no node of a level is worth expanding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specvlm.attention import BasePlan, MaskedPlan
from specvlm.side import PLACEHOLDER_ID, Side, ones_mask
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
    # parent_rows[d] / ranks[d] (d >= 1): CPU long [len(levels[d])], each node's parent's row
    # in the forward before (the root: row 0; else its index in levels[d - 1]) and its rank
    parent_rows: tuple[torch.Tensor | None, ...] = ()
    ranks: tuple[torch.Tensor | None, ...] = ()

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
        rows = {-1: 0} | {node: r for level in levels for r, node in enumerate(level)}
        parent_rows = (None,) + tuple(
            torch.tensor([rows[tree.parents[i]] for i in level]) for level in levels[1:]
        )
        ranks = (None,) + tuple(
            torch.tensor([tree.paths[i][-1] for i in level]) for level in levels[1:]
        )
        return cls(
            tree, tree.max_rank() + 1, tuple(levels), tuple(counts), tuple(visible), cuts,
            parent_rows, ranks,
        )  # fmt: skip


@dataclass(frozen=True)
class Children:
    """The children a picker proposes for some tree rows: ``tokens[r]`` in rank order,
    ``probs[r]`` their draft probabilities (for the confidence cut; 1.0 where not computed), and,
    where children are sampled, ``draft_probs`` fp32 ``[R, V]``: the distribution each row's
    children were drawn from (the verifier needs it)."""

    tokens: list[list[int]]
    probs: list[list[float]]
    draft_probs: torch.Tensor | None = None


class TopKChildren:
    """Deterministic children: the draft's top-``k`` tokens of each row (greedy decoding, and
    sampling with fixed children)."""

    def __init__(self, with_probs: bool):
        self.with_probs = with_probs  # softmax only when the confidence cut needs it

    def __call__(self, logits: torch.Tensor, k: int, paths: list[list[int]]) -> Children:
        if not self.with_probs:
            tokens = logits.topk(k, dim=-1).indices.tolist()
            return Children(tokens, [[1.0] * k for _ in tokens])
        probs, tokens = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
        return Children(tokens.tolist(), probs.tolist())


# A child slot the picker could not fill (sampled children, the draft's support exhausted): never
# accepted; the models are fed PLACEHOLDER_ID in its place, and nothing it leads to is ever used.
EMPTY = -1


def _fed(token: int) -> int:
    """The token a model is fed for a node's token (an empty slot's placeholder)."""
    return PLACEHOLDER_ID if token == EMPTY else token


@dataclass(frozen=True)
class Proposal:
    """What one drafting step proposes: a token for every node of ``tree`` (the plan's tree cut
    at the depth reached). The draft cache then holds ``prefix_len`` entries (up to the root)
    followed by the fed nodes (those above the deepest level) in node order."""

    tree: Tree
    tokens: list[int]
    prefix_len: int
    root_pos: torch.Tensor  # CPU long [R]: the root's position
    # fp32 [N + 1, V] where children were sampled: row 0 the root's, row i + 1 node i's
    # distribution (zeros for nodes that were not expanded); None for top-k children
    draft_probs: torch.Tensor | None = None
    # a dynamic tree's (specvlm.dynamic_tree): per node, its offset in the draft cache after
    # prefix_len (None: never fed); None for a static tree, whose fed nodes are in node order
    draft_slots: tuple[int | None, ...] | None = None

    def fed_tokens(self) -> list[int]:
        """The tokens the models are fed (:data:`EMPTY` slots as the placeholder)."""
        return [_fed(t) for t in self.tokens]

    def paths(self) -> list[list[int]]:
        """Each node's fed tokens from depth 1 down to the node itself."""
        fed = self.fed_tokens()
        paths: list[list[int]] = []
        for i, parent in enumerate(self.tree.parents):
            paths.append((paths[parent] if parent >= 0 else []) + [fed[i]])
        return paths


def draft_tree(
    draft: Side,
    plan: DraftPlan,
    pending: list[int],
    stop_tokens: frozenset[int] = frozenset(),
    min_confidence: float = 0.0,
    pick=None,
) -> Proposal:
    """Propose a token for every node of ``plan.tree``, or of the tree cut at a smaller depth.

    ``pending``: tokens the draft has not processed yet, the last one being the tree's root (the
    last emitted token). They are fed as a causal chain; the root's children become the depth-1
    nodes, and each level ``d`` is then fed with a mask letting each node see the prefix and its
    own ancestors, its children giving the level ``d + 1`` nodes (node path ``[..., r]`` takes
    its parent's rank-``r`` child). ``pick(logits [R, V], k, paths) -> Children`` chooses the
    children of the rows' nodes (``paths[r]``: the tokens from depth 1 down to the row's node,
    ``[]`` for the root); default: the draft's top-``k``. The deepest level is never fed.

    Drafting stops early (the tree is cut after level ``d``) when no node of level ``d`` is worth
    expanding: every one of them is a stop token (EOS: the target ends there if it accepts it),
    or its path's draft probability (product of the draft's probabilities along the path) is
    below ``min_confidence``. Either way the output stays exactly the target's; only the work
    changes.
    """
    pick = pick or TopKChildren(with_probs=min_confidence > 0)
    tree = plan.tree
    logits, root_pos, prefix_len = feed_pending(draft, pending)
    first = pick(logits[0, -1:], plan.top_k, [[]])
    children = {-1: (first.tokens[0], first.probs[0])}
    sampled = {} if first.draft_probs is None else {-1: first.draft_probs[0]}
    path_prob = {-1: 1.0}
    path = {-1: []}
    node_tokens: list[int] = []
    for level in range(1, tree.depth + 1):
        nodes = plan.levels[level]
        for i in nodes:
            parent, rank = tree.parents[i], tree.paths[i][-1]
            toks, ps = children[parent]
            node_tokens.append(toks[rank])
            path_prob[i] = path_prob[parent] * ps[rank]
            fed = _fed(toks[rank])
            path[i] = path[parent] + [fed]
        if level == tree.depth or not any(
            node_tokens[i] not in stop_tokens
            and node_tokens[i] != EMPTY
            and path_prob[i] >= min_confidence
            for i in nodes
        ):
            break
        step_plan, mask = _level_plan(plan, level, prefix_len, draft.device)
        logits = draft.step(
            [path[i][-1] for i in nodes],
            torch.full((len(nodes),), level),
            step_plan,
            mask,
            slice(None),
            start=root_pos,
        )
        picked = pick(logits[0], plan.top_k, [path[i] for i in nodes])
        for row, node in enumerate(nodes):
            children[node] = (picked.tokens[row], picked.probs[row])
            if picked.draft_probs is not None:
                sampled[node] = picked.draft_probs[row]
    drafted = plan.cuts[tree.depths[len(node_tokens) - 1]]
    return Proposal(drafted, node_tokens, prefix_len, root_pos, _stack(sampled, drafted.size))


def draft_tree_on_device(
    draft: Side,
    plan: DraftPlan,
    pending: list[int],
    stop_tokens: frozenset[int] = frozenset(),
    min_confidence: float = 0.0,
    pick=None,
) -> Proposal:
    """:func:`draft_tree` for the draft's top-``k`` children (``pick`` None, no confidence
    cut), with every level's tokens kept on the device: each level is fed the previous
    forward's top-``k`` indices gathered by the plan's index tensors, and the host reads the
    node tokens once, after the last level (instead of once per level). The whole tree is
    always drafted: ``stop_tokens`` are not checked (nodes below a stop token are drafted and
    never emitted: the stopping criteria end generation at the stop token), which changes the
    work, never the output."""
    if pick is not None or min_confidence > 0:
        raise ValueError("drafting on the device takes the draft's top-k, with no confidence cut")
    tree = plan.tree
    logits, root_pos, prefix_len = feed_pending(draft, pending)
    children = logits[0].topk(plan.top_k, dim=-1).indices  # [rows, k] on the device
    levels = []
    for level in range(1, tree.depth + 1):
        at = children.device
        tokens = children[plan.parent_rows[level].to(at), plan.ranks[level].to(at)]
        levels.append(tokens)
        if level == tree.depth:
            break
        step_plan, mask = _level_plan(plan, level, prefix_len, draft.device)
        logits = draft.step(
            tokens,
            torch.full((len(plan.levels[level]),), level),
            step_plan,
            mask,
            slice(None),
            start=root_pos,
        )
        children = logits[0].topk(plan.top_k, dim=-1).indices
    node_tokens = torch.cat(levels).tolist()  # the one read of the step's drafting
    return Proposal(tree, node_tokens, prefix_len, root_pos)


def feed_pending(draft: Side, pending: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Feed the pending tokens as a causal chain: the root's logits ``[1, 1, V]``, the root's
    position, and the draft cache's length after them (where the tree's nodes start)."""
    base = draft.length
    logits = draft.step(
        pending,
        torch.arange(len(pending)),
        BasePlan(),
        ones_mask(base + len(pending), draft.device),
        slice(len(pending) - 1, len(pending)),
    )
    return logits, draft.next_pos + len(pending) - 1, base + len(pending)


def _level_plan(plan: DraftPlan, level: int, prefix_len: int, device):
    """The attention plan and mask feeding ``level``'s nodes after ``prefix_len`` entries."""
    vis, fed = plan.visible[level], plan.counts[level]
    if vis is None:  # a chain level: the node sees everything before it; plain causal
        return BasePlan(), ones_mask(prefix_len + fed, device)
    mask = torch.ones(1, 1, len(plan.levels[level]), prefix_len + fed, dtype=torch.bool)
    mask[0, 0, :, prefix_len:] = vis
    mask = mask.to(device)
    return MaskedPlan(mask), mask


def _stack(rows: dict[int, torch.Tensor], n: int) -> torch.Tensor | None:
    """The sampled rows as ``[n + 1, V]`` (root first), zeros where a node was not expanded."""
    if not rows:
        return None
    root = rows[-1]
    out = root.new_zeros(n + 1, root.shape[-1])
    for node, row in rows.items():
        if node < n:
            out[node + 1] = row
    return out
