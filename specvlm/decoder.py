"""Driving a stock model's text decoder directly, and the transformers version differences.

The multimodal wrapper of each family (vision tower, projector, placeholder merge, M-RoPE index)
is run *unchanged* once per prompt by :func:`capture_decoder_inputs`: a forward pre-hook on the
text decoder records exactly what the wrapper hands it (``inputs_embeds``, ``position_ids`` and
family extras such as Qwen3-VL's deepstack features) and stops the forward there. Everything
after that (prefill, tree drafting, verification) calls the decoder with those inputs, pruned
or extended, and a cache we own.

Every access to transformers internals (private attributes, registries, version differences)
lives here and only here:

* transformers >= 5.2x names the decoder's cache argument ``cache``; 5.17 names it
  ``past_key_values`` (newer releases still accept it with a deprecation warning).
* ``DynamicCache.crop`` changed its argument meaning; we never call it, and compact the cache
  layers' ``keys`` / ``values`` tensors ourselves (:func:`keep_cache_entries`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

# Keyword arguments of the decoder call that we provide ourselves on every forward.
_OWN_ARGS = {
    "input_ids",
    "inputs_embeds",
    "position_ids",
    "attention_mask",
    "cache",
    "past_key_values",
    "use_cache",
    "cache_position",
    "return_dict",
    "output_attentions",
    "output_hidden_states",
}


@dataclass
class DecoderInputs:
    """What a model's multimodal wrapper passes to its text decoder for one prompt."""

    inputs_embeds: torch.Tensor  # [1, L, C]
    position_ids: torch.Tensor | None  # [1, L] (1-D RoPE) or [R, 1, L] (M-RoPE); None: 0..L-1
    extra: dict = field(default_factory=dict)  # family-specific keyword arguments


class _Captured(Exception):
    pass


def capture_decoder_inputs(model: nn.Module, decoder: nn.Module, inputs: dict) -> DecoderInputs:
    """Run ``model(**inputs)`` up to the decoder call and return the decoder's inputs."""
    captured: dict = {}

    def hook(module, args, kwargs):
        if args:
            raise RuntimeError("specvlm expects the text decoder to be called with keywords")
        captured.update(kwargs)
        raise _Captured

    inputs = with_generation_position_ids(model, inputs)
    handle = decoder.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(**inputs, use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "inputs_embeds" not in captured or captured["inputs_embeds"] is None:
        raise RuntimeError(
            f"{type(model).__name__} did not call its text decoder with inputs_embeds; "
            "this model layout is not supported"
        )
    extra = {k: v for k, v in captured.items() if k not in _OWN_ARGS}
    return DecoderInputs(captured["inputs_embeds"], captured.get("position_ids"), extra)


def with_generation_position_ids(model: nn.Module, inputs: dict) -> dict:
    """``inputs`` with the position ids ``generate`` would pass to the first forward.

    transformers >= 5.2x ``generate`` computes them before the prefill
    (``_prepare_position_ids_for_generation``) instead of leaving them to the forward; for
    Qwen3-VL inputs without ``mm_token_type_ids`` that gives text positions where a bare forward
    raises. Doing the same keeps the prompt's positions exactly those of ``target.generate``.
    Older releases, and models whose forward takes no ``position_ids``, are left as they are."""
    prepare = getattr(model, "_prepare_position_ids_for_generation", None)
    if prepare is None or inputs.get("position_ids") is not None:
        return inputs
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return inputs
    input_ids = inputs.get("input_ids")
    if input_ids is None:
        return inputs
    return dict(inputs, position_ids=prepare(input_ids, dict(inputs)))


def cache_argument_name(decoder: nn.Module) -> str:
    return _cache_argument_name(type(decoder))


@functools.cache
def _cache_argument_name(decoder_class: type) -> str:
    """Per decoder class (read once: this runs on every forward)."""
    params = inspect.signature(decoder_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def cache_length(cache) -> int:
    return cache.get_seq_length()


def keep_cache_entries(cache, start: int, offsets: list[int]) -> None:
    """Keep positions ``0 .. start - 1`` and ``start + o`` for ``o`` in ``offsets`` (ascending) of
    every layer; drop the rest. In place: the kept entries move down, the tail is sliced off."""
    for layer in cache.layers:
        keys, values = layer.keys, layer.values
        if offsets != list(range(len(offsets))):
            src = torch.tensor(offsets, device=keys.device) + start
            dst = slice(start, start + len(offsets))
            keys[..., dst, :] = keys.index_select(-2, src)
            values[..., dst, :] = values.index_select(-2, src)
        layer.keys = keys[..., : start + len(offsets), :]
        layer.values = values[..., : start + len(offsets), :]


# -------------------------------------------------------------------------------------------
# Attention routing: the transformers internals specvlm.attention needs
# -------------------------------------------------------------------------------------------
def attention_implementation(decoder: nn.Module) -> str:
    """The attention implementation name the decoder runs with (``"sdpa"``, ``"eager"``, ...)."""
    return decoder.config._attn_implementation or "eager"


def model_attention_function(implementation: str, module: nn.Module):
    """The model's own attention function for ``implementation``: each model file defines its
    own ``eager_attention_forward``; the others are in ``ALL_ATTENTION_FUNCTIONS``."""
    import sys

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if implementation == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[implementation]


def register_attention(name: str, function, mask_like: str) -> None:
    """Register ``function`` as attention implementation ``name`` (once, additively), with the
    attention-mask function of the implementation ``mask_like``."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(name, function)
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(mask_like)
        if mask_fn is None:
            raise NotImplementedError(
                f"attention implementation {mask_like!r} has no attention-mask function in "
                "transformers; use attn_implementation='sdpa' or 'eager'"
            )
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask_fn)


def _decoder_configs(decoder: nn.Module) -> list:
    """The distinct config objects the decoder's attention layers read their implementation
    from."""
    configs = {id(decoder.config): decoder.config}
    for module in decoder.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(module, "layer_idx"):
            configs.setdefault(id(cfg), cfg)
    return list(configs.values())


@contextlib.contextmanager
def attention_implementation_set_to(decoder: nn.Module, name: str) -> Iterator[None]:
    """Run the decoder's attention layers with implementation ``name`` inside the block; the
    previous implementation is restored afterwards, also on error."""
    configs = _decoder_configs(decoder)
    saved = [cfg._attn_implementation_internal for cfg in configs]
    try:
        for cfg in configs:
            cfg._attn_implementation_internal = name
        yield
    finally:
        for cfg, impl in zip(configs, saved, strict=True):
            cfg._attn_implementation_internal = impl


def decoder_forward(
    decoder: nn.Module,
    lm_head: nn.Module,
    cache,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    *,
    logits_rows: slice | None = None,
    extra: dict | None = None,
) -> torch.Tensor | None:
    """One decoder forward with our cache; the logits of ``logits_rows`` (None: no logits)."""
    kwargs = {cache_argument_name(decoder): cache}
    out = decoder(
        inputs_embeds=inputs_embeds,
        position_ids=position_ids,
        attention_mask=attention_mask,
        use_cache=True,
        **kwargs,
        **(extra or {}),
    )
    if logits_rows is None:
        return None
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
    hidden = hidden[:, logits_rows]
    return lm_head(hidden.to(lm_head.weight.device))
