"""Wiring captured draft steps into one ``generate`` call (used by ``SpeculativeDecoder``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from specvlm.attention import BasePlan
from specvlm.capture.buckets import width_bucket
from specvlm.capture.pool import DraftCapture
from specvlm.capture.side import StaticSide
from specvlm.side import Side
from specvlm.trees import Tree

# Tokens the draft feeds as a chain before a tree: the pending tokens (an accepted node of the
# deepest level, which was never fed, and the bonus token).
_CHAIN_WIDTHS = (1, 2)


def tree_widths(tree: Tree) -> tuple[int, ...]:
    """The width buckets drafting ``tree`` runs: the chain's and each fed level's."""
    levels = [len(tree.nodes_at_depth(d)) for d in range(1, tree.depth)]
    return tuple(sorted({width_bucket(n) for n in (*_CHAIN_WIDTHS, *levels)}))


def entries_needed(prompt_len: int, max_new_tokens: int, tree: Tree) -> int:
    """A bound on the draft cache's entries in a call: the prompt (unpruned, a bound on the
    kept part), every new token, one step's tree, and the widest padding."""
    return prompt_len + max_new_tokens + tree.size + max(tree_widths(tree))


def warm(side: StaticSide, widths: tuple[int, ...]) -> None:
    """Compile the widths not compiled yet (each forward is rolled back)."""
    filled = side.filled
    for width in widths:
        if width in side.runner.widths:
            continue
        side.step([0] * width, torch.arange(width), BasePlan(), None, slice(0, 1))
        side.keep(filled, [])


@contextlib.contextmanager
def captured_draft(
    capture: DraftCapture, prompt_len: int, max_new_tokens: int, tree: Tree
) -> Iterator:
    """A function turning the draft's prefilled side into a :class:`StaticSide` on a runner
    held for the block (compiling the widths ``tree`` needs, once per runner)."""
    with capture.runner(entries_needed(prompt_len, max_new_tokens, tree)) as runner:

        def adopt(side: Side) -> StaticSide:
            static = StaticSide.adopt(side, runner)
            forwards = static.forwards
            warm(static, tree_widths(tree))
            static.forwards = forwards
            return static

        yield adopt
