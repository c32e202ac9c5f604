"""Attention routing for the decoders of the target and the draft, through transformers'
``AttentionInterface`` (no forked model files, no patched functions).

:func:`routed_attention` switches a decoder's text config to a SpecVLM attention name for the
duration of a ``with`` block and restores it afterwards (also on error). The name
``specvlm:<base>`` is registered once, additively, in ``AttentionInterface`` and
``AttentionMaskInterface``; ``<base>`` is the model's own implementation (``sdpa``, ``eager``,
``flash_attention_2``, ...), which keeps handling every call we do not take over. What a
forward does is said by the plan set with :func:`attention_plan`, one small frozen dataclass per
mode, held in a context variable: a plan acts only in the thread (context) that set it.

Threads sharing one model: overlapping ``routed_attention`` blocks share one switch (the first
in switches the config, the last out restores it, exactly once:
:func:`specvlm.decoder.attention_implementation_set_to`); while it is switched, a forward with no
plan (another thread's plain ``generate``, a forward outside SpecVLM's steps) runs the model's
own attention function with the model's own mask, unchanged.

* :class:`BasePlan`: the model's own attention, nothing else.
* :class:`ScorePlan`: the model's own attention, and on the side the text rows' attention to
  the video keys is added into a per-device fp32 buffer by
  :func:`specvlm_kernels.video_attention_scores` (the target's prefill).
* :class:`TreePlan`: the queries are the last ``N`` keys and see the whole prefix plus their
  ancestors: :func:`specvlm_kernels.tree_attention` (the target's verification) where it runs
  as a Triton kernel; where it would run its plain-PyTorch reference (CPU without the
  interpreter), SDPA with the equivalent explicit mask instead, which is several times faster
  there (the reference is written for clarity, not speed); the router builds that mask itself,
  once per forward.
* :class:`MaskedPlan`: an explicit bool mask ``[1, 1, Q, K]`` through SDPA (the draft's
  level-by-level tree expansion, where the queries are only part of the tree in the cache).

Inside a compiled forward (:mod:`specvlm.capture`'s captured steps) no plan is read: the
model's own attention runs with the explicit ``[1, 1, Q, K]`` mask the step passes.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from specvlm.decoder import (
    attention_implementation,
    attention_implementation_set_to,
    model_attention_function,
    register_attention,
)
from specvlm_kernels import backend_for, tree_attention, video_attention_scores
from specvlm_kernels._dispatch import REFERENCE

_PREFIX = "specvlm:"


@dataclass(frozen=True)
class BasePlan:
    """The model's own attention (plain causal prefill or chain decoding)."""


@dataclass
class ScoreAccumulator:
    """Where a scoring prefill adds its text-to-video attention: one fp32 ``[1, Nv]`` buffer
    per device, and the time the scoring kernels took (device-synchronised)."""

    buffers: dict = field(default_factory=dict)  # torch.device -> fp32 [1, Nv]
    seconds: float = 0.0


@dataclass(frozen=True)
class ScorePlan:
    """The model's own attention; on the side, the attention of the text rows
    ``[text_start, L)`` to the video keys ``[video_start, video_end)`` is accumulated."""

    video_start: int
    video_end: int
    text_start: int
    scores: ScoreAccumulator = field(default_factory=ScoreAccumulator, compare=False)


@dataclass(frozen=True)
class TreePlan:
    """The queries are the last ``N`` keys: each sees the whole prefix and the last ``N`` keys as
    ``tree_mask`` (bool ``[N, N]``) says."""

    tree_mask: torch.Tensor
    # the same visibility as an explicit mask, built by the router where it runs SDPA
    _explicit: dict = field(default_factory=dict, compare=False, repr=False)

    def as_explicit_mask(self, keys: int, device: torch.device) -> torch.Tensor:
        """Bool ``[1, 1, N, keys]``: every node sees the ``keys - N`` prefix keys and the last
        ``N`` keys as ``tree_mask`` says. Built once per forward (its layers share it)."""
        mask = self._explicit.get((keys, device))
        if mask is None:
            n = self.tree_mask.shape[-1]
            mask = torch.ones(1, 1, n, keys, dtype=torch.bool, device=device)
            mask[0, 0, :, keys - n :] = self.tree_mask.to(device)
            self._explicit.clear()
            self._explicit[(keys, device)] = mask
        return mask


@dataclass(frozen=True)
class MaskedPlan:
    """An explicit bool mask ``[1, 1, Q, K]`` (the draft's level-by-level tree expansion)."""

    mask: torch.Tensor


AttentionPlan = BasePlan | ScorePlan | TreePlan | MaskedPlan

_PLAN: contextvars.ContextVar[AttentionPlan | None] = contextvars.ContextVar(
    "specvlm_attention_plan", default=None
)


@contextlib.contextmanager
def attention_plan(plan: AttentionPlan) -> Iterator[AttentionPlan]:
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


def _sdpa_with_mask(query, key, value, mask, scaling):
    group = query.shape[1] // key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask.to(query.device), scale=scaling, enable_gqa=group > 1
    )
    return out.transpose(1, 2).contiguous(), None


def _make_routed(base: str):
    def routed(module, query, key, value, attention_mask, **kwargs):
        if torch.compiler.is_compiling():
            # a captured step (specvlm.capture): the model's own attention with the explicit
            # mask it is given (plans are context variables, which compiled code cannot read)
            return model_attention_function(base, module)(
                module, query, key, value, attention_mask, **kwargs
            )
        plan = _PLAN.get()
        scaling = kwargs.get("scaling")
        if isinstance(plan, ScorePlan):
            _add_scores(plan, query, key, scaling)
        elif isinstance(plan, TreePlan):
            if backend_for(query.device) == REFERENCE:
                mask = plan.as_explicit_mask(key.shape[2], query.device)
                return _sdpa_with_mask(query, key, value, mask, scaling)
            out = tree_attention(query, key, value, plan.tree_mask.to(query.device), scale=scaling)
            return out.transpose(1, 2).contiguous(), None
        elif isinstance(plan, MaskedPlan):
            return _sdpa_with_mask(query, key, value, plan.mask, scaling)
        function = model_attention_function(base, module)
        return function(module, query, key, value, attention_mask, **kwargs)

    routed.__name__ = f"specvlm_{base}_attention"
    return routed


def _add_scores(plan: ScorePlan, query, key, scaling) -> None:
    if plan.text_start >= query.shape[2] or plan.video_end <= plan.video_start:
        return  # no text rows after the video, or no video: nothing to score
    device = query.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _dev: None)
    sync(device)
    start = time.perf_counter()
    acc = plan.scores
    buf = acc.buffers.get(device)
    if buf is None:
        nv = plan.video_end - plan.video_start
        buf = acc.buffers[device] = torch.zeros(1, nv, dtype=torch.float32, device=device)
    video_attention_scores(
        query[:, :, plan.text_start :],
        key,
        plan.video_start,
        plan.video_end,
        scale=scaling,
        q_offset=plan.text_start,
        out=buf,
    )
    sync(device)
    acc.seconds += time.perf_counter() - start


def base_implementation(decoder: nn.Module) -> str:
    return attention_implementation(decoder).removeprefix(_PREFIX)


@contextlib.contextmanager
def routed_attention(decoder: nn.Module) -> Iterator[None]:
    """Route ``decoder``'s attention through SpecVLM for the duration of the block."""
    base = base_implementation(decoder)
    name = _PREFIX + base
    register_attention(name, _make_routed(base), mask_like=base)
    with attention_implementation_set_to(decoder, name):
        yield
