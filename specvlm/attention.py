"""Attention routing for the decoders of the target and the draft, through transformers'
``AttentionInterface`` (no forked model files, no patched functions).

:func:`routed_attention` switches a decoder's text config to a SpecVLM attention name for the
duration of a ``with`` block and restores it afterwards (also on error). The name
``specvlm:<base>`` is registered once, additively, in ``AttentionInterface`` and
``AttentionMaskInterface``; ``<base>`` is the model's own implementation (``sdpa``, ``eager``,
``flash_attention_2``, ...), which keeps handling every call we do not take over. What a
forward does is said by the :class:`AttentionPlan` set with :func:`attention_plan`:

* ``score``: the model's own attention, and on the side the text rows' attention to the video
  keys is added into a per-device fp32 buffer by :func:`specvlm_kernels.video_attention_scores`
  (the target's prefill).
* ``tree``: the queries are the last ``N`` keys and see the whole prefix plus their ancestors:
  :func:`specvlm_kernels.tree_attention` (the target's verification) where it runs as a Triton
  kernel; where it would run its plain-PyTorch reference (CPU without the interpreter), SDPA
  with the equivalent explicit mask instead, which is several times faster there (the
  reference is written for clarity, not speed).
* ``masked``: an explicit bool mask ``[1, 1, Q, K]`` through SDPA (the draft's level-by-level
  tree expansion, where the queries are only part of the tree in the cache).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from specvlm_kernels import backend_for, tree_attention, video_attention_scores
from specvlm_kernels._dispatch import REFERENCE

_PREFIX = "specvlm:"


@dataclass
class AttentionPlan:
    """What the routed attention does during one decoder forward."""

    mode: str = "base"  # "base" | "score" | "tree" | "masked"
    # score mode
    video_start: int = 0
    video_end: int = 0
    text_start: int = 0
    scores: dict = field(default_factory=dict)  # torch.device -> fp32 [1, Nv]
    score_seconds: float = 0.0  # time spent in the scoring kernels (device-synchronised)
    # tree / masked modes
    tree_mask: torch.Tensor | None = None  # bool [N, N] over the last N keys (tree mode)
    mask: torch.Tensor | None = None  # bool [1, 1, Q, K] (masked mode; tree mode via SDPA)

    def tree_as_mask(self, keys: int, device: torch.device) -> torch.Tensor:
        """Tree mode's visibility as an explicit bool mask ``[1, 1, N, keys]``: every node sees
        the ``keys - N`` prefix keys, and the last ``N`` keys as ``tree_mask`` says. Built once
        per forward (all layers share it)."""
        n = self.tree_mask.shape[-1]
        cached = self.mask
        if cached is None or cached.shape[-1] != keys or cached.device != device:
            cached = torch.ones(1, 1, n, keys, dtype=torch.bool, device=device)
            cached[0, 0, :, keys - n :] = self.tree_mask.to(device)
            self.mask = cached
        return cached


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


def _base_function(base: str, module: nn.Module):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base == "eager":  # each model file defines its own eager function
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def _sdpa_with_mask(module, query, key, value, mask, scaling):
    group = query.shape[1] // key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask.to(query.device), scale=scaling, enable_gqa=group > 1
    )
    return out.transpose(1, 2).contiguous(), None


def _make_routed(base: str):
    def routed(module, query, key, value, attention_mask, **kwargs):
        plan = _PLAN.get()
        mode = plan.mode if plan is not None else "base"
        scaling = kwargs.get("scaling")
        if mode == "score":
            _add_scores(plan, query, key, scaling)
        elif mode == "tree" and backend_for(query.device) == REFERENCE:
            mask = plan.tree_as_mask(key.shape[2], query.device)
            return _sdpa_with_mask(module, query, key, value, mask, scaling)
        elif mode == "tree":
            out = tree_attention(query, key, value, plan.tree_mask.to(query.device), scale=scaling)
            return out.transpose(1, 2).contiguous(), None
        elif mode == "masked":
            return _sdpa_with_mask(module, query, key, value, plan.mask, scaling)
        return _base_function(base, module)(module, query, key, value, attention_mask, **kwargs)

    routed.__name__ = f"specvlm_{base}_attention"
    return routed


def _add_scores(plan: AttentionPlan, query, key, scaling) -> None:
    if plan.text_start >= query.shape[2] or plan.video_end <= plan.video_start:
        return  # no text rows after the video, or no video: nothing to score
    device = query.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _dev: None)
    sync(device)
    start = time.perf_counter()
    buf = plan.scores.get(device)
    if buf is None:
        nv = plan.video_end - plan.video_start
        buf = plan.scores[device] = torch.zeros(1, nv, dtype=torch.float32, device=device)
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
    plan.score_seconds += time.perf_counter() - start


def _register(base: str) -> str:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = _PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(name, _make_routed(base))
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(base)
        if mask_fn is None:
            raise NotImplementedError(
                f"attention implementation {base!r} has no attention-mask function in "
                "transformers; use attn_implementation='sdpa' or 'eager'"
            )
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask_fn)
    return name


def _decoder_configs(decoder: nn.Module) -> list:
    """The distinct config objects the decoder's attention layers read their implementation from."""
    configs = {id(decoder.config): decoder.config}
    for module in decoder.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(module, "layer_idx"):
            configs.setdefault(id(cfg), cfg)
    return list(configs.values())


def base_implementation(decoder: nn.Module) -> str:
    impl = decoder.config._attn_implementation or "eager"
    return impl.removeprefix(_PREFIX)


@contextlib.contextmanager
def routed_attention(decoder: nn.Module) -> Iterator[None]:
    """Route ``decoder``'s attention through SpecVLM for the duration of the block."""
    configs = _decoder_configs(decoder)
    saved = [cfg._attn_implementation_internal for cfg in configs]
    name = _register(base_implementation(decoder))
    try:
        for cfg in configs:
            cfg._attn_implementation_internal = name
        yield
    finally:
        for cfg, impl in zip(configs, saved, strict=True):
            cfg._attn_implementation_internal = impl
