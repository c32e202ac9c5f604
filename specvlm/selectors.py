"""Which video tokens the draft keeps: the selectors ``accelerate(selector=...)`` accepts.

A selector is called as ``selector(scores, keep, grid)`` with ``scores`` fp32 ``[Nv]`` (the
target's text-to-video attention per grid token, summed over layers), the budget ``keep`` and
``grid = (T, H, W)``, and returns the kept grid indices (long ``[keep]``, unique, any order;
they are sorted afterwards). All built-ins run the same code path so ablations are comparable.

Two built-ins read the video itself instead of the target's attention (the positional bias of
attention-guided selection is what ParallelVLM and HIPPO avoid): a selector with a true
``needs_features`` attribute is called as ``selector(scores, keep, grid, features)`` with
:class:`VideoFeatures`, the draft's own input embeddings (its vision tower and projector; its
word embeddings for the question). ``docs/performance.md`` ("Selector study") compares them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import torch
import torch.nn.functional as F

from specvlm import names
from specvlm_kernels import select_video_tokens

Selector = Callable[[torch.Tensor, int, tuple[int, int, int]], torch.Tensor]


def two_stage(mass: float) -> Selector:
    """Stage I: highest scores up to ``mass`` of the total; Stage II: uniform over the grid."""

    def select(scores, keep, grid):
        return select_video_tokens(scores[None], keep, mass=mass, grid=grid)[0]

    return select


def attention_only(scores, keep, grid):
    """Stage I to the full budget: the ``keep`` highest scores."""
    return torch.topk(scores, keep, sorted=False).indices


def uniform(scores, keep, grid):
    """Stage II only: evenly over frames and over a spatial lattice within each frame."""
    return select_video_tokens(scores[None], keep, mass=0.0, grid=grid)[0]


@dataclass(frozen=True)
class VideoFeatures:
    """The draft's input embeddings a feature selector reads: ``video`` ``[Nv, D]`` in grid
    order, ``question`` ``[Lq, D]`` (the text after the video; all the text where none follows)."""

    video: torch.Tensor
    question: torch.Tensor


class FeatureSelector:
    """A built-in selector of the video's own features (``needs_features``): the top ``keep``
    grid tokens by ``rank(features, grid)`` (fp32 ``[Nv]``, higher kept first)."""

    needs_features = True

    def __init__(self, rank: Callable[[VideoFeatures, tuple[int, int, int]], torch.Tensor]):
        self.rank = rank

    def __call__(self, scores, keep, grid, features: VideoFeatures):
        if features.video.dim() != 2 or features.video.shape[0] != scores.numel():
            raise ValueError(
                f"video features of shape {tuple(features.video.shape)} for "
                f"{scores.numel()} video tokens"
            )
        ranks = self.rank(features, grid).float()
        return torch.topk(ranks, keep, sorted=False).indices


def question_similarity(features: VideoFeatures, grid) -> torch.Tensor:
    """Cosine similarity of each video token to the question's mean direction (text-to-visual
    relevance, as ParallelVLM selects)."""
    if features.question.shape[0] == 0:
        raise ValueError("the similarity selector needs text beside the video; the prompt has none")
    video = F.normalize(features.video.float(), dim=-1)
    question = F.normalize(features.question.float(), dim=-1).mean(0)
    return video @ question


def local_distinctness(features: VideoFeatures, grid) -> torch.Tensor:
    """1 - the mean cosine similarity of each video token to its neighbours in time (the same
    place in the previous and next frames) and space (the four adjacent places): tokens unlike
    their surroundings carry the video's local semantics; repeated background does not."""
    t, h, w = grid
    video = F.normalize(features.video.float(), dim=-1).reshape(t, h, w, -1)
    total = torch.zeros(t, h, w)
    count = torch.zeros(t, h, w)
    for dim in range(3):
        if video.shape[dim] < 2:
            continue
        n = video.shape[dim] - 1
        cos = (video.narrow(dim, 0, n) * video.narrow(dim, 1, n)).sum(-1).cpu()
        for part in (total.narrow(dim, 0, n), total.narrow(dim, 1, n)):
            part += cos
        for part in (count.narrow(dim, 0, n), count.narrow(dim, 1, n)):
            part += 1
    return (1 - total / count.clamp(min=1)).reshape(-1)


def needs_features(select) -> bool:
    return bool(getattr(select, "needs_features", False))


def random_selector(seed: int) -> Selector:
    """``keep`` tokens drawn uniformly without replacement (a fixed seed per call)."""

    def select(scores, keep, grid):
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(scores.numel(), generator=gen)[:keep].to(scores.device)

    return select


# name -> factory(mass, seed) -> Selector: the built-in selectors, in the order they are listed
BUILT_IN: dict[str, Callable[[float, int], Selector]] = {
    "two_stage": lambda mass, seed: two_stage(mass),
    "attention": lambda mass, seed: attention_only,
    "uniform": lambda mass, seed: uniform,
    "random": lambda mass, seed: random_selector(seed),
    "similarity": lambda mass, seed: FeatureSelector(question_similarity),
    "semantic": lambda mass, seed: FeatureSelector(local_distinctness),
}
NAMES = names.SELECTORS  # the one list of names (the CLI checks it without importing torch)


def resolve(selector, *, mass: float, seed: int) -> Selector:
    if callable(selector):
        return selector
    factory = BUILT_IN.get(selector) if isinstance(selector, str) else None
    if factory is None:
        raise ValueError(
            f"selector must be one of {', '.join(NAMES)} or a callable, got {selector!r}"
        )
    return factory(mass, seed)


def keep_count(num_tokens: int, drop_rate: float) -> int:
    """The video tokens the draft keeps: ``floor(num_tokens * (1 - drop_rate))``, computed on the
    decimal value of ``drop_rate`` as written (``0.9`` is 9/10 exactly), so binary rounding never
    loses a token (10 tokens at 0.9 keep 1, 1960 keep 196)."""
    kept = Decimal(num_tokens) * (1 - Decimal(repr(float(drop_rate))))
    return int(kept.to_integral_value(rounding=ROUND_FLOOR))


def run_selector(
    select: Selector,
    scores: torch.Tensor,
    keep: int,
    grid,
    features: VideoFeatures | None = None,
) -> torch.Tensor:
    """Call ``select`` (with ``features`` where it needs them) and check what it returns: sorted
    unique long indices ``[keep]``."""
    nv = scores.numel()
    if needs_features(select):
        if features is None:
            raise ValueError("this selector reads the video's features, which were not given")
        idx = select(scores, keep, grid, features)
    else:
        idx = select(scores, keep, grid)
    if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"the selector must return an integer tensor, got {idx!r:.80}")
    idx = idx.reshape(-1).long().cpu()
    if idx.numel() != keep:
        raise ValueError(f"the selector returned {idx.numel()} indices, expected keep={keep}")
    idx = torch.sort(idx).values
    if keep and (idx[0] < 0 or idx[-1] >= nv):
        raise ValueError(f"the selector returned indices outside [0, {nv})")
    if keep > 1 and bool((idx[1:] == idx[:-1]).any()):
        raise ValueError("the selector returned duplicate indices")
    return idx
