"""What one ``generate`` call did: :class:`GenerationStats` (``SpeculativeDecoder.last_stats``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from specvlm.trees import Tree


@dataclass
class GenerationStats:
    """What the last ``generate`` call did. Times are seconds (device-synchronised)."""

    mean_accepted_length: float = 0.0  # tokens emitted per target verification, bonus included
    target_forwards: int = 0  # prefill + verifications + plain decoding steps
    draft_forwards: int = 0  # prefill + drafting forwards
    new_tokens: int = 0
    video_tokens: int = 0  # grid tokens of the video (0 without video)
    kept_video_tokens: int = 0  # grid tokens the draft saw
    target_prefill: float = 0.0  # includes scoring
    scoring: float = 0.0
    pruning: float = 0.0
    draft_prefill: float = 0.0
    decode: float = 0.0  # first new token to the end: speculation, then plain decoding if any
    total: float = 0.0  # the whole call, calibration included
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)  # per CUDA device
    accepted_lengths: list[int] = field(default_factory=list)  # per verification
    drafted_depths: list[int] = field(default_factory=list)  # tree depth drafted, per step
    video_grid: tuple[int, int, int] | None = None  # (T, H, W) of the video tokens
    video_scores: torch.Tensor | None = field(default=None, repr=False)  # CPU fp32 [T*H*W]
    kept_indices: torch.Tensor | None = field(default=None, repr=False)  # CPU long, sorted
    # --- the settings this call ran with (chosen by the automatic policy, or fixed) -----------
    policy: str = "fixed"  # "auto": chosen by specvlm.policy; "fixed": accelerate's arguments
    speculated: bool = True  # False: the target decoded alone (plain decoding) from the start
    drop_rate: float = 0.0  # share of the video tokens the draft did not see
    tree: Tree | None = field(default=None, repr=False)  # the draft tree (None: plain decoding)
    tree_size: int = 0  # nodes of that tree
    tree_depth: int = 0
    selector: str = ""  # the selector that pruned the video ("": nothing was pruned)
    scored_video: bool = True  # whether the target prefill scored the video tokens
    captured: bool = False  # whether the draft's forwards ran as captured steps (capture=)
    target_captured: bool = False  # whether the target's verification / decoding did
    capture_reason: str = ""  # why, per model (one line: "draft: auto: ...; target: ...")
    capture_setup: float = 0.0  # copying prefills into static caches, compiling new widths
    plain_tokens: int = 0  # tokens decoded by the target alone, one forward each
    plain_decode: float = 0.0  # seconds of that plain decoding (part of ``decode``)
    fallback_step: int | None = None  # speculation stopped after this many steps (policy)
    # --- overlapped drafting (accelerate(overlap=), specvlm.overlap) ----------------------------
    overlapped: bool = False  # whether the draft worked on its own worker while the target did
    overlap_reason: str = ""  # why (one line)
    lookahead_steps: int = 0  # verifications during which the draft drafted the next tree ahead
    lookahead_hits: int = 0  # ... whose looked-ahead tree was the one the next step used
    overlap_busy: float = 0.0  # seconds the draft's worker drafted during decode
    overlap_wait: float = 0.0  # ... of them the target's side waited for after verifying
    calibration: float = 0.0  # seconds spent measuring forward costs before this call
    predicted_speedup: float | None = None  # the policy's expected decode speedup of its choice
    reason: str = ""  # why the policy chose what it chose (one line)
    # --- acceptance by draft rank, for the policy: at every node the walk reached, which ranks
    # were offered as children and which one the target took -----------------------------------
    rank_offers: list[int] = field(default_factory=list)
    rank_hits: list[int] = field(default_factory=list)
    # ... the same per depth of the children (row 0: the root's children, depth 1)
    depth_rank_offers: list[list[int]] = field(default_factory=list)
    depth_rank_hits: list[list[int]] = field(default_factory=list)

    def record_step(self, tree: Tree, accepted: list[int]) -> None:
        """One verification of ``tree`` (the drafted tree) whose accepted path is ``accepted``."""
        children = _children_by_rank(tree)
        walk = [-1, *accepted]
        for i, node in enumerate(walk):
            kids = children[node]
            if not kids:
                continue
            if len(self.depth_rank_offers) <= i:
                self.depth_rank_offers.append([])
                self.depth_rank_hits.append([])
            counts = (self.rank_offers, self.rank_hits)
            depth_counts = (self.depth_rank_offers[i], self.depth_rank_hits[i])
            for offers, hits in (counts, depth_counts):
                _grow(offers, max(kids) + 1)
                _grow(hits, max(kids) + 1)
                for rank in kids:
                    offers[rank] += 1
                if i + 1 < len(walk):
                    hits[tree.paths[walk[i + 1]][-1]] += 1

    @property
    def lookahead_used(self) -> float:
        """Share of the verifications whose next tree had been drafted ahead and was used."""
        steps = len(self.accepted_lengths)
        return self.lookahead_hits / steps if steps else 0.0

    @property
    def overlap_hidden(self) -> float:
        """Share of the draft worker's decode time hidden behind the target's verification (1:
        the target never waited for it)."""
        if self.overlap_busy <= 0:
            return 0.0
        return max(0.0, 1.0 - self.overlap_wait / self.overlap_busy)

    def finish(self) -> None:
        """Derived fields, once the call is done."""
        steps = len(self.accepted_lengths)
        self.mean_accepted_length = sum(self.accepted_lengths) / steps if steps else 0.0


@lru_cache(maxsize=64)
def _children_by_rank(tree: Tree) -> dict[int, tuple[int, ...]]:
    """For the root (-1) and every node: the ranks of its children in ``tree``."""
    children: dict[int, list[int]] = {-1: []}
    for i, path in enumerate(tree.paths):
        children.setdefault(i, [])
        children[tree.parents[i]].append(path[-1])
    return {node: tuple(ranks) for node, ranks in children.items()}


def _grow(counts: list[int], size: int) -> None:
    counts.extend([0] * (size - len(counts)))
