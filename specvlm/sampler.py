"""Lossless acceptance of a draft token tree: greedy, and sampling with the target's distribution.

One verification step sees the tree's node tokens and the target's processed next-token
distribution at the root and after every node (index 0 is the root, index ``i + 1`` node ``i``).
It walks down from the root: at each node either one drafted child is accepted and the walk
descends into it, or the step ends with a *bonus* token sampled by the target. The emitted tokens
(accepted path + bonus) are distributed exactly as ``len(path) + 1`` tokens sampled
autoregressively from the target (proof: ``docs/design.md``, "Sampling: why the output
distribution is the target's"). Two ways of drafting children are supported:

* **fixed children** (``draft_probs=None``): any distinct tokens, e.g. the draft's top-k. The
  step draws ``x ~ p``; if ``x`` is a child the walk descends into it, else ``x`` is the bonus.
  The acceptance at a node is the target mass on its children, the most that any lossless rule
  can get from fixed children.
* **children sampled without replacement** from the draft's distribution ``q`` at the node, in
  draw order (:func:`sample_children`; recursive speculative decoding, Jeon et al. 2024). Child
  ``i`` is accepted with probability ``min(1, r(x_i) / q_i(x_i))``, where ``q_i`` is ``q`` without
  the earlier children, renormalised, and ``r`` the target's residual, which starts at ``p`` and
  becomes ``normalise(max(r - q_i, 0))`` after each rejection; with no child accepted, the bonus
  is drawn from the final ``r``.

The decision at one node is exposed as :func:`node_outcomes`, the exact probability of every
outcome given the drafted children; :func:`accept_sampled` draws one outcome per node from it
(all nodes in one vectorised draw, one host sync per step) and follows the draws down the tree.

Children slots: a node's children occupy slots ``0..K-1`` by rank (``tree.paths[i][-1]``), ``K``
the tree's ``max_rank() + 1``. A slot holding a negative token is empty (no such node, or a slot
:func:`sample_children` could not fill because the draft's support was exhausted): it is never
accepted. With sampled children an empty slot, or a child the draft gives no probability, also
ends the scan of its siblings (the later ones were not drawn after it, so they cannot be judged).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from specvlm.trees import Tree

__all__ = ["accept_greedy", "accept_sampled", "node_outcomes", "sample_children"]


def sample_children(
    draft_probs: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``k`` tokens per row without replacement, each draw proportional to the remaining
    weights (what ``torch.multinomial(row, k, replacement=False)`` means, except that it may
    return zero-weight tokens once a row's support is exhausted).

    ``draft_probs`` ``[R, V]``: non-negative weights (the draft's processed distribution at each
    node to expand; rows need not be normalised). Returns long ``[R, k]`` on the same device: the
    tokens in draw order, ``-1`` in the slots after a row's support ran out (a row with ``s``
    positive weights gets ``min(k, s)`` tokens). Randomness comes only from ``generator`` (on the
    rows' device; the global RNG when ``None``).

    Exponential race: token ``v`` gets the key ``E_v / w_v`` with ``E_v ~ Exp(1)`` i.i.d.; the
    smallest key is ``v`` with probability ``w_v / sum(w)``, and by memorylessness the order of
    the remaining keys is the same race over the remaining tokens, so sorting the keys is
    sequential sampling without replacement. Keys are computed in float64.
    """
    if draft_probs.dim() != 2:
        raise ValueError(f"draft_probs must be [R, V], got shape {tuple(draft_probs.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    rows, vocab = draft_probs.shape
    w = draft_probs.to(torch.float64)
    race = torch.empty_like(w).exponential_(generator=generator)
    keys = torch.where(w > 0, race / w, torch.inf)
    take = min(k, vocab)
    vals, idx = torch.topk(keys, take, dim=-1, largest=False, sorted=True)
    idx = torch.where(torch.isinf(vals), -1, idx)
    if take < k:
        idx = torch.cat([idx, idx.new_full((rows, k - take), -1)], dim=-1)
    return idx


def node_outcomes(
    target_probs: torch.Tensor,
    children: torch.Tensor,
    draft_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact probabilities of every outcome of verification at a batch of nodes.

    ``target_probs`` ``[R, V]``: the target's distribution ``p`` at each node (normalised here).
    ``children`` long ``[R, K]``: the drafted children's tokens by slot (rank, or draw order),
    negative for an empty slot. ``draft_probs`` ``[R, V]`` or ``None``: ``None`` for fixed
    children; else the draft distribution ``q`` each row's children were drawn from without
    replacement, in slot order (normalised here; an all-zero row means no child can be judged).

    Returns ``[R, K + V]`` in the promoted float dtype (at least float32): column ``j < K`` is
    the probability of accepting slot ``j``, column ``K + x`` that no child is accepted and the
    bonus is ``x``. Rows sum to 1 up to rounding (exactly, in exact arithmetic). Fixed children:
    slot ``j`` gets ``p(child_j)`` (a token repeated among siblings counts at its first slot) and
    the bonus ``p`` with the children removed. Sampled children: the sequential rule of the
    module docstring, as probabilities; a rejection that has probability 0 in exact arithmetic
    (``r == q_i``, where ``max(r - q_i, 0)`` vanishes) gets probability 0 here too, which drops at
    most rounding-level mass.
    """
    if target_probs.dim() != 2 or children.dim() != 2 or children.shape[0] != target_probs.shape[0]:
        raise ValueError(
            f"target_probs [R, V] and children [R, K] must share R, got "
            f"{tuple(target_probs.shape)} and {tuple(children.shape)}"
        )
    dtype = torch.promote_types(target_probs.dtype, torch.float32)
    p = target_probs.to(dtype)
    p = p / p.sum(-1, keepdim=True)
    rows, vocab = p.shape
    children = children.to(device=p.device, dtype=torch.long)
    k = children.shape[1]
    valid = (children >= 0) & (children < vocab)
    tok = children.clamp(0, vocab - 1)
    if draft_probs is None:
        same = (tok[:, :, None] == tok[:, None, :]) & valid[:, None, :]
        slot = torch.arange(k, device=p.device)
        earlier = slot[:, None] > slot[None, :]  # [j, j']: j' comes before j
        first = valid & ~(same & earlier).any(-1)
        accept = torch.where(first, p.gather(1, tok), 0)
        hit = torch.zeros_like(p).scatter_add_(1, tok, valid.to(dtype))
        return torch.cat([accept, torch.where(hit > 0, 0, p)], dim=-1)

    if draft_probs.shape != target_probs.shape:
        raise ValueError(
            f"draft_probs must have target_probs' shape {tuple(target_probs.shape)}, "
            f"got {tuple(draft_probs.shape)}"
        )
    q = draft_probs.to(device=p.device, dtype=dtype)
    qsum = q.sum(-1, keepdim=True)
    q = torch.where(qsum > 0, q / qsum.clamp_min(torch.finfo(dtype).tiny), 0)
    r = p  # the residual, normalised
    reach = torch.ones(rows, dtype=dtype, device=p.device)  # P(every earlier slot rejected)
    live = torch.ones(rows, dtype=torch.bool, device=p.device)  # the scan has not ended
    removed = torch.zeros(rows, vocab, dtype=torch.bool, device=p.device)
    accept = torch.zeros(rows, k, dtype=dtype, device=p.device)
    for j in range(k):
        x = tok[:, j : j + 1]
        rest = torch.where(removed, 0, q)
        mass = rest.sum(-1, keepdim=True)
        q_j = rest / mass.clamp_min(torch.finfo(dtype).tiny)  # zero when the support is used up
        qx = q_j.gather(1, x).squeeze(1)
        live = live & valid[:, j] & (qx > 0)
        rx = r.gather(1, x).squeeze(1)
        a = torch.where(live, (rx / torch.where(live, qx, 1)).clamp(max=1), 0)
        accept[:, j] = reach * a
        diff = (r - q_j).clamp_min(0)
        dmass = diff.sum(-1, keepdim=True)
        rejectable = live[:, None] & (dmass > 0)
        r = torch.where(rejectable, diff / dmass.clamp_min(torch.finfo(dtype).tiny), r)
        reach = torch.where(live, torch.where(rejectable[:, 0], reach * (1 - a), 0), reach)
        removed = removed | torch.zeros_like(removed).scatter_(1, x, live[:, None])
    return torch.cat([accept, reach[:, None] * r], dim=-1)


@lru_cache(maxsize=64)
def _layout(
    tree: Tree,
) -> tuple[int, tuple[int, ...], tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """``(K, row of each node's parent, rank of each node, node in each [row][slot] or -1)``."""
    k = tree.max_rank() + 1
    rows = tuple(parent + 1 for parent in tree.parents)
    ranks = tuple(path[-1] for path in tree.paths)
    slots = [[-1] * k for _ in range(tree.size + 1)]
    for i, (row, rank) in enumerate(zip(rows, ranks, strict=True)):
        slots[row][rank] = i
    return k, rows, ranks, tuple(tuple(s) for s in slots)


def _tokens(tree: Tree, node_tokens: Sequence[int] | torch.Tensor) -> list[int]:
    tokens = node_tokens.tolist() if isinstance(node_tokens, torch.Tensor) else list(node_tokens)
    if len(tokens) != tree.size:
        raise ValueError(
            f"node_tokens must have one token per node ({tree.size}), got {len(tokens)}"
        )
    return [int(t) for t in tokens]


def accept_greedy(
    tree: Tree, node_tokens: Sequence[int] | torch.Tensor, target_argmax: torch.Tensor
) -> tuple[list[int], int]:
    """Longest path of draft nodes that the target's greedy choices confirm.

    ``node_tokens`` ``[N]``: the draft token at each node (negative: empty, never accepted).
    ``target_argmax`` ``[N + 1]``: the target's choice after the root (index 0) and after each
    node (index ``i + 1``). From the root, move to the child whose token is the target's choice
    (the first in rank order if siblings repeat a token) until there is none. Returns
    ``(accepted node indices in order, bonus token)``, the bonus being the target's choice after
    the last accepted node. The same as :func:`accept_sampled` with one-hot target distributions.
    """
    tokens = _tokens(tree, node_tokens)
    choice = target_argmax.tolist()
    if len(choice) != tree.size + 1:
        raise ValueError(f"target_argmax must have {tree.size + 1} entries, got {len(choice)}")
    slots = _layout(tree)[3]
    accepted: list[int] = []
    row = 0
    while True:
        want = choice[row]
        nxt = next((c for c in slots[row] if c >= 0 and want == tokens[c] >= 0), None)
        if nxt is None:
            return accepted, int(want)
        accepted.append(nxt)
        row = nxt + 1


def accept_sampled(
    tree: Tree,
    node_tokens: Sequence[int] | torch.Tensor,
    target_probs: torch.Tensor,
    *,
    draft_probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[list[int], int]:
    """Verify a tree by sampling; the emitted tokens are distributed as the target's own samples.

    ``node_tokens`` ``[N]``: the token of each node (negative: an empty slot, never accepted).
    ``target_probs`` ``[N + 1, V]``: the target's processed next-token distribution (after
    temperature, top-k / top-p, penalties; zeros allowed) at the root (row 0) and after each node
    (row ``i + 1``). ``draft_probs``: ``None`` when each node's children are fixed distinct tokens
    (e.g. the draft's top-k); else ``[N + 1, V]``, the draft distribution each node's children
    were drawn from without replacement in rank order (:func:`sample_children`), row 0 for the
    root's children, row ``i + 1`` for node ``i``'s (rows of leaves are not used). ``generator``:
    the only source of randomness (on the probabilities' device; the global RNG when ``None``).

    Returns ``(accepted node indices in order, bonus token)`` like :func:`accept_greedy`. All
    nodes' outcomes are drawn at once from :func:`node_outcomes`, and the walk follows them
    (nodes off the path are drawn and ignored; each node's draw is independent of the others).
    """
    tokens = _tokens(tree, node_tokens)
    if target_probs.dim() != 2 or target_probs.shape[0] != tree.size + 1:
        raise ValueError(
            f"target_probs must be [N + 1 = {tree.size + 1}, V], got {tuple(target_probs.shape)}"
        )
    k, rows, ranks, slots = _layout(tree)
    device = target_probs.device
    children = torch.full((tree.size + 1, k), -1, dtype=torch.long)
    children[list(rows), list(ranks)] = torch.tensor(tokens, dtype=torch.long)
    weights = node_outcomes(target_probs, children.to(device), draft_probs)
    choice = _draw(weights, generator).tolist()
    accepted: list[int] = []
    row = 0
    while True:
        c = choice[row]
        if c >= k:
            return accepted, c - k
        node = slots[row][c]
        if node < 0:  # unreachable: empty slots have weight 0
            raise RuntimeError(f"drew the empty slot {c} of row {row}")
        accepted.append(node)
        row = node + 1


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of non-negative ``weights`` ``[R, M]``, proportional to them (the
    exponential race of :func:`sample_children`, keys in float64; zero weights never win)."""
    w = weights.to(torch.float64)
    race = torch.empty_like(w).exponential_(generator=generator)
    return torch.where(w > 0, w / race, 0).argmax(dim=-1)
