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
import contextvars
import copy
import functools
import inspect
import threading
import weakref
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
    """Stops the wrapper's forward once the decoder's inputs are recorded."""


# The capture in progress in this context: (the decoder it watches, where its inputs go). A hook
# on a shared decoder acts only for the context that installed it; every other thread's forward
# (a plain ``generate`` beside ours, another SpecVLM call) passes it untouched.
_CAPTURE: contextvars.ContextVar[tuple[nn.Module, dict] | None] = contextvars.ContextVar(
    "specvlm_capture", default=None
)


def _capture_hook(module, args, kwargs=None):
    # A forward that listed this hook just before its capture removed it calls it without
    # keywords (the with-kwargs flag goes with the removal): such a stale call is never the
    # running capture's own, whose hook stays registered until its forward has returned.
    active = _CAPTURE.get()
    if kwargs is None or active is None or active[0] is not module:
        return None
    if args:
        raise RuntimeError("specvlm expects the text decoder to be called with keywords")
    active[1].update(kwargs or {})
    raise _Captured


def capture_decoder_inputs(model: nn.Module, decoder: nn.Module, inputs: dict) -> DecoderInputs:
    """Run ``model(**inputs)`` up to the decoder call and return the decoder's inputs.

    Safe while other threads run the same model: the hook records and stops only this call's
    forward (:data:`_CAPTURE`)."""
    captured: dict = {}
    inputs = with_generation_position_ids(model, inputs)
    token = _CAPTURE.set((decoder, captured))
    handle = decoder.register_forward_pre_hook(_capture_hook, with_kwargs=True)
    try:
        model(**inputs, use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
        _CAPTURE.reset(token)
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
    Older releases, and models whose forward takes no ``position_ids``, are left as they are.

    M-RoPE models store the prompt's ``rope_deltas`` on the model as they compute the positions:
    they are computed on a scratch copy (:func:`_scratch_copy`), so the model itself is never
    written (threads may be generating with it)."""
    prepare = getattr(model, "_prepare_position_ids_for_generation", None)
    if prepare is None or inputs.get("position_ids") is not None:
        return inputs
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return inputs
    input_ids = inputs.get("input_ids")
    if input_ids is None:
        return inputs
    position_ids = _scratch_copy(model)._prepare_position_ids_for_generation(
        input_ids, dict(inputs)
    )
    return dict(inputs, position_ids=position_ids)


def _scratch_copy(model: nn.Module) -> nn.Module:
    """A shallow copy of ``model`` whose inner model (``model.model``, where Qwen2.5-VL and
    Qwen3-VL keep ``rope_deltas``) is a shallow copy too: weights, configs and every other
    submodule are shared, and an attribute a method writes lands on the copies."""
    outer = copy.copy(model)
    inner = model._modules.get("model")
    if inner is not None:
        outer._modules = dict(model._modules, model=copy.copy(inner))
    return outer


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
# Static caches: the transformers internals specvlm.capture needs
# -------------------------------------------------------------------------------------------
# A transformers ``StaticCache`` holds per layer preallocated ``keys`` / ``values``
# ``[1, kv_heads, capacity, head_dim]`` and a 0-d ``cumulative_length`` tensor where the next
# forward writes (the same in 5.17 and 5.25, read from both sources). The layers' tensors are
# marked as static addresses when allocated, so a compiled forward (or a CUDA graph) reads and
# writes them in place. We own the length: it is set before every forward
# (:func:`set_static_cache_length`) and compaction moves entries in place
# (:func:`keep_static_cache_entries`).


def new_static_cache(config, capacity: int):
    from transformers import StaticCache

    return StaticCache(config=config, max_cache_len=capacity)


def fill_static_cache(static, dynamic) -> int:
    """Copy a prefilled ``DynamicCache`` into an empty ``StaticCache`` of at least its length
    (allocating the static layers like the prefill's: device, dtype, heads); returns the
    length."""
    length = cache_length(dynamic)
    if len(static.layers) != len(dynamic.layers):
        raise ValueError(
            f"the static cache has {len(static.layers)} layers, the prefill {len(dynamic.layers)}"
        )
    for into, layer in zip(static.layers, dynamic.layers, strict=True):
        if not into.is_initialized:
            into.lazy_initialization(layer.keys, layer.values)
        if length > into.max_cache_len:
            raise ValueError(f"a prompt of {length} entries does not fit {into.max_cache_len}")
        into.keys[..., :length, :].copy_(layer.keys)
        into.values[..., :length, :].copy_(layer.values)
    set_static_cache_length(static, length)
    return length


def set_static_cache_length(static, length: int) -> None:
    """The next forward writes at entry ``length`` (entries past it are never attended: the
    masks of :mod:`specvlm.capture` do not show them)."""
    for layer in static.layers:
        layer.cumulative_length.fill_(length)


def keep_static_cache_entries(static, start: int, offsets: list[int]) -> None:
    """:func:`keep_cache_entries` for a ``StaticCache``: the kept entries move down in place,
    the buffers keep their size and address; the caller sets the new length."""
    if offsets == list(range(len(offsets))):
        return
    src = torch.tensor(offsets, device=static.layers[0].keys.device) + start
    dst = slice(start, start + len(offsets))
    for layer in static.layers:
        keys, values = layer.keys, layer.values
        keys[..., dst, :] = keys.index_select(-2, src)
        values[..., dst, :] = values.index_select(-2, src)


def static_cache_tensors(static) -> list[torch.Tensor]:
    """Every buffer of the cache (for its memory footprint, and to release it)."""
    layers = [layer for layer in static.layers if layer.is_initialized]
    return [t for layer in layers for t in (layer.keys, layer.values)]


# -------------------------------------------------------------------------------------------
# Attention routing: the transformers internals specvlm.attention needs
# -------------------------------------------------------------------------------------------
# Decoders switched to a routed implementation (attention_implementation_set_to), and the lock
# every switch and registration takes.
_SWITCHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # decoder -> _Switch
_SWITCHES_LOCK = threading.Lock()


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

    with _SWITCHES_LOCK:
        if name not in ALL_MASK_ATTENTION_FUNCTIONS:
            mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(mask_like)
            if mask_fn is None:
                raise NotImplementedError(
                    f"attention implementation {mask_like!r} has no attention-mask function in "
                    "transformers; use attn_implementation='sdpa' or 'eager'"
                )
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask_fn)
        if name not in ALL_ATTENTION_FUNCTIONS:
            ALL_ATTENTION_FUNCTIONS.register(name, function)


def _decoder_configs(decoder: nn.Module) -> list:
    """The distinct config objects the decoder's attention layers read their implementation
    from."""
    configs = {id(decoder.config): decoder.config}
    for module in decoder.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(module, "layer_idx"):
            configs.setdefault(id(cfg), cfg)
    return list(configs.values())


@dataclass
class _Switch:
    """A decoder switched to another attention implementation: by how many blocks, to which
    name, and what each of its configs held before."""

    name: str
    saved: list  # [(config, implementation before)]
    holders: int = 0


@contextlib.contextmanager
def attention_implementation_set_to(decoder: nn.Module, name: str) -> Iterator[None]:
    """Run the decoder's attention layers with implementation ``name`` inside the block.

    Blocks may overlap (threads sharing one model): the first to enter switches the configs,
    the last to leave restores what they held before, exactly once, also on error. Overlapping
    blocks must ask for the same name."""
    with _SWITCHES_LOCK:
        switch = _SWITCHES.get(decoder)
        if switch is None:
            configs = _decoder_configs(decoder)
            saved = [(cfg, cfg._attn_implementation_internal) for cfg in configs]
            switch = _SWITCHES[decoder] = _Switch(name, saved)
            for cfg in configs:
                cfg._attn_implementation_internal = name
        elif switch.name != name:
            raise RuntimeError(
                f"the decoder runs attention {switch.name!r} for another call; cannot switch it "
                f"to {name!r} at the same time"
            )
        switch.holders += 1  # nothing between this and the try below can raise
    try:
        yield
    finally:
        with _SWITCHES_LOCK:
            switch.holders -= 1
            if switch.holders == 0:
                del _SWITCHES[decoder]
                for cfg, impl in switch.saved:
                    cfg._attn_implementation_internal = impl


def decoder_forward(
    decoder: nn.Module,
    lm_head: nn.Module,
    cache,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    *,
    logits_rows: slice | torch.Tensor | None = None,
    extra: dict | None = None,
) -> torch.Tensor | None:
    """One decoder forward with our cache; the logits of ``logits_rows`` (None: no logits; a
    long tensor ``[B]``: batch row ``b``'s entry ``logits_rows[b]`` only, ``[B, 1, V]``)."""
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
    if isinstance(logits_rows, torch.Tensor):
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        hidden = hidden[rows, logits_rows.to(hidden.device)][:, None]
    else:
        hidden = hidden[:, logits_rows]
    return lm_head(hidden.to(lm_head.weight.device))


# -------------------------------------------------------------------------------------------
# Generation machinery: private GenerationMixin helpers, version differences
# -------------------------------------------------------------------------------------------
# specvlm.generation resolves a ``generate`` call with the model's own GenerationMixin steps, in
# generate's order, so options merge, lengths resolve and logits processors / stopping criteria
# are built exactly as ``target.generate`` builds them. These are private transformers methods;
# every access to them (and to GenerationConfig's private attributes) is in this section.
#
# Same names and signatures in 5.17 and 5.24 (read from both sources). Differences inside them:
# * 5.24 ``generate`` drops an all-ones attention_mask before building the processors and its
#   repetition penalty turns a mask into ``prompt_ignore_length``; 5.17 ignores the mask there.
#   We pass no mask, as 5.24 does for an unpadded prompt (padded prompts are refused).
# * 5.24 ``generate`` maps ``past_key_values=`` / ``cache_params=`` to ``cache=``
#   (``deprecate_kwarg``); 5.24 ``_validate_model_kwargs`` also lets ``mm_encoder_outputs`` pass.
# * PrefixConstrainedLogitsProcessor gets max(num_beams, num_return_sequences) rows per prompt in
#   5.24, num_beams in 5.17: both 1 here (the others are refused).


def generation_mode_kwargs(model, kwargs: dict, synced_gpus, assistant_model, streamer) -> dict:
    """generate's first step: pops ``tokenizer`` / ``assistant_tokenizer`` from ``kwargs`` (in
    place) and resolves ``synced_gpus`` (None: on under DeepSpeed ZeRO-3 / FSDP with several
    ranks). Returns the non-None entries."""
    extract = model._extract_generation_mode_kwargs
    return extract(None, kwargs, synced_gpus, assistant_model, streamer)


def merged_generation_config(model, generation_config, kwargs: dict):
    """``(config, model_kwargs)``: ``generation_config`` (None: a fresh one) over the model's
    ``generation_config`` over the global defaults, then ``kwargs``; the kwargs that are not
    generation options come back as model kwargs. Raises as generate does for a model config
    edited to control generation."""
    return model._prepare_generation_config(generation_config, **kwargs)


def validate_model_kwargs(model, model_kwargs: dict) -> None:
    """generate's check that every model kwarg is used by the model (catches option typos)."""
    model._validate_model_kwargs(dict(model_kwargs))


def generation_inputs(model, inputs, generation_config, model_kwargs: dict):
    """``(inputs_tensor, input_name, model_kwargs)`` as generate extracts the prompt."""
    return model._prepare_model_inputs(inputs, generation_config.bos_token_id, model_kwargs)


def prepare_special_tokens(model, generation_config, has_attention_mask: bool, device) -> None:
    """Sets the config's eos / pad / bos tensors (pad falls back to the first eos), batch 1."""
    prepare = model._prepare_special_tokens
    prepare(generation_config, has_attention_mask, device=device, batch_size=1)


def special_token_tensors(generation_config):
    """``(eos, pad)`` tensors set by :func:`prepare_special_tokens` (eos 1-D or None)."""
    return generation_config._eos_token_tensor, generation_config._pad_token_tensor


def generation_attention_mask(model, input_ids: torch.Tensor, generation_config, model_kwargs):
    """The mask generate builds when none is passed (zeros at pad tokens when it can tell)."""
    return model._prepare_attention_mask_for_generation(input_ids, generation_config, model_kwargs)


def resolve_generation_length(
    model, generation_config, has_default_max_length: bool, has_default_min_length: bool, input_ids
):
    """generate's step 6: ``max_length`` / ``min_length`` from the ``*_new_tokens`` options or
    the default (20 new tokens, capped by ``max_position_embeddings``), then its checks (raises
    when the prompt already fills ``max_length``, warns as generate warns)."""
    length = input_ids.shape[1]
    generation_config = model._prepare_generated_length(
        generation_config=generation_config,
        has_default_max_length=has_default_max_length,
        has_default_min_length=has_default_min_length,
        model_input_name="input_ids",
        inputs_tensor=input_ids,
        input_ids_length=length,
    )
    model._validate_generated_length(generation_config, length, has_default_max_length)
    return generation_config


def generation_logits_processor(
    model,
    generation_config,
    input_ids: torch.Tensor,
    *,
    prefix_allowed_tokens_fn,
    logits_processor,
    negative_prompt_ids,
    negative_prompt_attention_mask,
):
    """generate's processors (warpers included when sampling), merged with the user's list."""
    return model._get_logits_processor(
        generation_config=generation_config,
        input_ids_seq_length=input_ids.shape[1],
        encoder_input_ids=input_ids,
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
        logits_processor=logits_processor,
        device=input_ids.device,
        model_kwargs={"attention_mask": None},
        negative_prompt_ids=negative_prompt_ids,
        negative_prompt_attention_mask=negative_prompt_attention_mask,
    )


def generation_stopping_criteria(model, generation_config, stopping_criteria, tokenizer):
    """generate's stopping criteria (max length, max time, stop strings, EOS) plus the user's."""
    return model._get_stopping_criteria(
        generation_config=generation_config,
        stopping_criteria=stopping_criteria,
        tokenizer=tokenizer,
    )


def default_generation_params() -> dict:
    """The global defaults generate fills in for options nobody set (``max_length`` 20, ...)."""
    from transformers import GenerationConfig

    return GenerationConfig._get_default_generation_params()
