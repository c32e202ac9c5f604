"""Static draft trees: shape, attention mask, depths (acceptance: :mod:`specvlm.sampler`).

A tree is a list of *rank paths*. The path ``[0, 2]`` is the node reached by taking the draft's
top-1 token after the last accepted token, then the draft's top-3 token after that. The root
(the last accepted token) is implicit and not a node. Nodes are numbered by depth, then by
path, so a node's parent always comes before it; this is the order the target sees them in
during verification.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Tree", "build_tree", "chain", "default_tree", "tree_of_size"]


@dataclass(frozen=True)
class Tree:
    """A validated static token tree. Build one with :meth:`from_paths`, :func:`chain`,
    :func:`build_tree` or :func:`default_tree`."""

    paths: tuple[tuple[int, ...], ...]
    parents: tuple[int, ...] = field(repr=False)  # parent node index, -1 for the root
    depths: tuple[int, ...] = field(repr=False)  # 1 for children of the root

    @classmethod
    def from_paths(cls, paths: Sequence[Sequence[int]]) -> Tree:
        if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence):
            raise TypeError(f"tree must be a sequence of rank paths, got {type(paths).__name__}")
        clean = []
        for path in paths:
            if isinstance(path, (str, bytes)) or not isinstance(path, Sequence) or not path:
                raise ValueError(f"every tree path must be a non-empty list of ranks, got {path!r}")
            for rank in path:
                if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
                    raise ValueError(f"tree ranks must be non-negative ints, got {path!r}")
            clean.append(tuple(path))
        if not clean:
            raise ValueError("tree must have at least one node")
        if len(set(clean)) != len(clean):
            raise ValueError("tree paths must be unique")
        ordered = sorted(clean, key=lambda p: (len(p), p))
        index = {p: i for i, p in enumerate(ordered)}
        parents = []
        for p in ordered:
            if len(p) > 1 and p[:-1] not in index:
                raise ValueError(f"tree path {list(p)} has no parent {list(p[:-1])} in the tree")
            parents.append(index[p[:-1]] if len(p) > 1 else -1)
        return cls(tuple(ordered), tuple(parents), tuple(len(p) for p in ordered))

    @property
    def size(self) -> int:
        return len(self.paths)

    @property
    def depth(self) -> int:
        return max(self.depths)

    def nodes_at_depth(self, depth: int) -> list[int]:
        return [i for i, d in enumerate(self.depths) if d == depth]

    def cut(self, depth: int) -> Tree:
        """The tree of the nodes at depth ``<= depth`` (the first nodes: they are numbered by
        depth), with the same numbering."""
        if depth >= self.depth:
            return self
        if depth < 1:
            raise ValueError(f"cut depth must be >= 1, got {depth}")
        n = sum(1 for d in self.depths if d <= depth)
        return Tree(self.paths[:n], self.parents[:n], self.depths[:n])

    def max_rank(self) -> int:
        """Largest top-k rank used anywhere: the draft needs its top ``max_rank() + 1``."""
        return max(max(p) for p in self.paths)

    def ancestor_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool ``[N, N]``: ``mask[i, j]`` iff node ``j`` is node ``i`` or one of its ancestors."""
        n = self.size
        mask = torch.eye(n, dtype=torch.bool)
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                mask[i] |= mask[parent]
        return mask.to(device) if device is not None else mask


def chain(depth: int) -> Tree:
    """A single path of ``depth`` top-1 proposals (classic speculative decoding)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"chain depth must be an int >= 1, got {depth!r}")
    return Tree.from_paths([[0] * d for d in range(1, depth + 1)])


def build_tree(rank_accept: Sequence[float], num_nodes: int, max_depth: int) -> Tree:
    """The ``num_nodes`` paths of largest expected acceptance, up to ``max_depth``.

    ``rank_accept[r]`` is the assumed probability that the draft's rank-``r`` token is the
    target's choice; a path's value is the product over its ranks. Because values shrink along
    a path, the best ``num_nodes`` paths always form a valid tree (every prefix is better than
    its extensions). Ties are broken towards shorter, lower-rank paths.
    """
    if num_nodes < 1 or max_depth < 1:
        raise ValueError("num_nodes and max_depth must be >= 1")
    probs = [float(p) for p in rank_accept]
    if not probs or any(not (0.0 < p <= 1.0) for p in probs):
        raise ValueError("rank_accept must be non-empty probabilities in (0, 1]")
    heap = [(-probs[r], (r,)) for r in range(len(probs))]
    heapq.heapify(heap)
    chosen: list[tuple[int, ...]] = []
    while heap and len(chosen) < num_nodes:
        neg_value, path = heapq.heappop(heap)
        chosen.append(path)
        if len(path) < max_depth:
            for r, p in enumerate(probs):
                heapq.heappush(heap, (neg_value * p, path + (r,)))
    return Tree.from_paths(chosen)


# Assumed acceptance by draft rank for a same-family draft; only shapes the default tree.
_DEFAULT_RANK_ACCEPT = (0.72, 0.12, 0.05, 0.03, 0.02, 0.015, 0.01, 0.008, 0.006, 0.005)


def default_tree() -> Tree:
    """The default static tree: 48 nodes, depth 6 (6, 10, 10, 9, 6, 7 nodes per level)."""
    return build_tree(_DEFAULT_RANK_ACCEPT, num_nodes=48, max_depth=6)


def tree_of_size(num_nodes: int, max_depth: int = 6) -> Tree:
    """The static tree of ``num_nodes`` nodes, at most ``max_depth`` deep, shaped by the same
    assumed acceptance by rank as :func:`default_tree` (which is ``tree_of_size(48)``), so trees
    of different sizes differ only in size."""
    return build_tree(_DEFAULT_RANK_ACCEPT, num_nodes=num_nodes, max_depth=max_depth)
