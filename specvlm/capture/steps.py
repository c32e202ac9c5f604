"""Wiring captured steps into one ``generate`` call (used by ``SpeculativeDecoder``): the widths
a tree needs on each side, the cache a call needs, and adopting a prefilled side."""

from __future__ import annotations

from collections.abc import Callable

import torch

from specvlm.attention import BasePlan
from specvlm.capture.buckets import width_bucket
from specvlm.capture.runner import CapturedForward, CaptureFailed
from specvlm.capture.side import StaticSide
from specvlm.dynamic_tree import DynamicTree
from specvlm.side import Side
from specvlm.trees import Tree

# Tokens the draft feeds as a chain before a tree: the pending tokens (an accepted node of the
# deepest level, which was never fed, and the bonus token).
_CHAIN_WIDTHS = (1, 2)


def draft_widths(tree: Tree | DynamicTree) -> tuple[int, ...]:
    """The width buckets drafting ``tree`` runs: the chain's and each fed level's (a dynamic
    tree's levels: any number of candidates up to the most a level feeds)."""
    if isinstance(tree, DynamicTree):
        levels = range(1, max(tree.level_widths, default=0) + 1)
    else:
        levels = [len(tree.nodes_at_depth(d)) for d in range(1, tree.depth)]
    return tuple(sorted({width_bucket(n) for n in (*_CHAIN_WIDTHS, *levels)}))


def verify_widths(tree: Tree | DynamicTree) -> tuple[int, ...]:
    """The width buckets the target runs: the root and the tree cut at each depth (drafting may
    stop early; a dynamic tree: the root and any number of nodes up to the most it verifies),
    and one token (plain decoding after the policy gives up)."""
    if isinstance(tree, DynamicTree):
        cuts = range(2, tree.most_verified + 2)
    else:
        cuts = [tree.cut(d).size + 1 for d in range(1, tree.depth + 1)]
    return tuple(sorted({width_bucket(n) for n in (1, *cuts)}))


def entries_needed(prompt_len: int, max_new_tokens: int, tree_nodes: int) -> int:
    """A bound on a cache's entries in a call: the prompt (unpruned, a bound on the draft's
    kept part), every new token, one step's tree of at most ``tree_nodes`` nodes and its root,
    and the widest padding of a forward."""
    return prompt_len + max_new_tokens + tree_nodes + 1 + width_bucket(tree_nodes + 1)


def warm(side: StaticSide, widths: tuple[int, ...]) -> None:
    """Compile the widths not compiled yet (each forward is rolled back). On a GPU each runs
    three times: ``mode="reduce-overhead"`` warms up on the first call and records its CUDA
    graph on the second, so the recording happens here, not in the first decoding step; where
    inductor skipped the graph, the runner notes it (the width then runs compiled, unrecorded)."""
    runner, filled = side.runner, side.filled
    repeats = 3 if runner.device.type == "cuda" else 1
    skips = _cudagraph_skips()
    for width in widths:
        if width in runner.widths:
            continue
        for _ in range(repeats):
            side.step([0] * width, torch.arange(width), BasePlan(), None, slice(0, 1))
            side.keep(filled, [])
    if runner.device.type == "cuda" and _cudagraph_skips() > skips:
        runner.notes.append("inductor skipped CUDA graphs for some widths (compiled, not replayed)")


def _cudagraph_skips() -> int:
    """Inductor's count of skipped CUDA graphs (0 where this torch does not keep it)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:  # a private counter: absent in some releases
        return 0


def adopter(
    runner: CapturedForward,
    widths: tuple[int, ...],
    on_failure: Callable[[CaptureFailed], None] | None,
) -> Callable[[Side], Side]:
    """The function turning a prefilled side into a :class:`StaticSide` on ``runner``, with
    ``widths`` compiled (once per runner). Where compiling fails, ``on_failure(error)`` is told
    and the eager side is kept (``None``: the error propagates, for ``capture=True``)."""

    def adopt(side: Side) -> Side:
        try:
            static = StaticSide.adopt(side, runner)
            forwards = static.forwards
            warm(static, widths)
        except CaptureFailed as error:
            if on_failure is None:
                raise
            on_failure(error)
            return side
        static.forwards = forwards  # the warm-up forwards are not the call's
        return static

    return adopt
