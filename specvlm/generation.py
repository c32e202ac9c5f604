"""Generation options, logits processing and stopping exactly as ``target.generate`` does them.

:func:`resolve` takes what a ``generate`` call received and does what transformers' ``generate``
does before its first forward, with the model's own ``GenerationMixin`` steps (wrapped in
:mod:`specvlm.decoder`, "Generation machinery"): it merges the options (call > the model's
``generation_config`` > global defaults), separates the model inputs, resolves the length
(``max_new_tokens`` / ``max_length``, or the stock 20 new tokens), and builds transformers' own
logits processors (warpers too when sampling) and stopping criteria, merged with the user's
``logits_processor`` / ``stopping_criteria`` / ``prefix_allowed_tokens_fn``. Everything the
speculative loop cannot honour exactly is refused first, in one line naming the option; every
``GenerationConfig`` field and ``generate`` keyword is classified in :data:`HONOURED_FIELDS`,
:data:`REFUSED_FIELDS`, :data:`HONOURED_ARGUMENTS` and :data:`REFUSED_ARGUMENTS`, and a field a
later transformers adds is refused unless it holds its default.

:func:`process_scores` applies the processors to token-tree rows: each row is processed as
``generate`` processes a batch-1 sequence ending at that node, ``logits_processor(input_ids,
logits.float())`` on the prompt's device. :func:`stops` (or :meth:`GeneratedSequence.append`)
applies the stopping criteria after each emitted token, as ``generate`` does after appending it.

Processors must be functions of ``(input_ids, scores)``: the loop calls them on speculative rows
that are never emitted, so a processor that keeps state between calls (counting calls, caching
the previous step) sees calls ``generate`` would not make. transformers' own processors other
than classifier-free guidance and watermarking (both refused) keep no such state. The stopping
criteria are called once per emitted token, in order, as ``generate`` calls them.

Sampling (``do_sample=True``): the output is distributed as ``target.generate``'s, but the same
seed does not give the same tokens (speculative sampling draws its random numbers differently).
Runs with the same settings are reproducible: randomness comes from ``generator=`` (a
``torch.Generator`` on the model's device; a specvlm option that stock ``generate`` does not
take), else from torch's global RNG, so ``torch.manual_seed(s)`` before the call repeats a run.
The tokens depend on the settings too (whether to speculate, the drop rate, the tree): the
automatic policy chooses them from measured timings, so under it the same seed can give other
tokens (still distributed as ``target.generate``'s); fixed settings repeat them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.generation import (
    EosTokenCriteria,
    GenerationMode,
    LogitsProcessorList,
    MaxLengthCriteria,
    StoppingCriteriaList,
)
from transformers.generation.logits_process import (
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from specvlm import decoder

__all__ = [
    "HONOURED_ARGUMENTS",
    "HONOURED_FIELDS",
    "REFUSED_ARGUMENTS",
    "REFUSED_FIELDS",
    "GeneratedSequence",
    "GenerationSetup",
    "process_scores",
    "resolve",
    "stops",
]

# -------------------------------------------------------------------------------------------
# What is honoured and what is refused
# -------------------------------------------------------------------------------------------
_PIPELINE = "applied by transformers' own logits processors, built as generate builds them"
_STOPPING = "applied by transformers' own stopping criteria, built as generate builds them"
_NO_EFFECT = "no effect on a batch-1 greedy / sampling generate either"
_OWN_CACHE = "cache / speed knob of generate's own loop; specvlm keeps its own caches"

# GenerationConfig fields that work as in generate (how, in a few words).
HONOURED_FIELDS: dict[str, str] = {
    "max_length": "resolved by generate's own length logic; stopping criterion",
    "max_new_tokens": "resolved by generate's own length logic; stopping criterion",
    "min_length": _PIPELINE,
    "min_new_tokens": _PIPELINE,
    "max_time": _STOPPING,
    "stop_strings": _STOPPING + " (needs tokenizer=, as generate)",
    "do_sample": "GenerationSetup.do_sample; the sampling warpers are in the pipeline",
    "temperature": _PIPELINE + " (when sampling)",
    "top_k": _PIPELINE + " (when sampling)",
    "top_p": _PIPELINE + " (when sampling)",
    "min_p": _PIPELINE + " (when sampling)",
    "top_h": _PIPELINE + " (when sampling)",
    "typical_p": _PIPELINE + " (when sampling)",
    "epsilon_cutoff": _PIPELINE + " (when sampling)",
    "eta_cutoff": _PIPELINE + " (when sampling)",
    "repetition_penalty": _PIPELINE,
    "encoder_repetition_penalty": _PIPELINE + " (the prompt plays the encoder input)",
    "no_repeat_ngram_size": _PIPELINE,
    "encoder_no_repeat_ngram_size": _PIPELINE + " (the prompt plays the encoder input)",
    "bad_words_ids": _PIPELINE,
    "sequence_bias": _PIPELINE,
    "suppress_tokens": _PIPELINE,
    "begin_suppress_tokens": _PIPELINE,
    "forced_bos_token_id": _PIPELINE,
    "forced_eos_token_id": _PIPELINE,
    "exponential_decay_length_penalty": _PIPELINE,
    "remove_invalid_values": _PIPELINE,
    "renormalize_logits": _PIPELINE,
    "eos_token_id": "GenerationSetup.eos_token_ids; EOS stopping criterion and processors",
    "pad_token_id": "GenerationSetup.pad_token_id (falls back to the first EOS, as generate)",
    "bos_token_id": "used by the processors as generate uses it",
    "decoder_start_token_id": "encoder-decoder models only: " + _NO_EFFECT,
    "early_stopping": "beam search only: " + _NO_EFFECT,
    "length_penalty": "beam search only: " + _NO_EFFECT,
    "diversity_penalty": "group beam search only: " + _NO_EFFECT,
    "low_memory": "beam / contrastive search only: " + _NO_EFFECT,
    "num_assistant_tokens": "assisted decoding only: " + _NO_EFFECT,
    "num_assistant_tokens_schedule": "assisted decoding only: " + _NO_EFFECT,
    "assistant_confidence_threshold": "assistant models only: " + _NO_EFFECT,
    "max_matching_ngram_size": "prompt lookup only: " + _NO_EFFECT,
    "assistant_lookbehind": "assisted decoding only: " + _NO_EFFECT,
    "target_lookbehind": "assisted decoding only: " + _NO_EFFECT,
    "assistant_ensemble_weight": "assisted decoding only: " + _NO_EFFECT,
    "speculation_type": "assisted decoding only: " + _NO_EFFECT,
    "use_cache": _OWN_CACHE,
    "cache_config": _OWN_CACHE,
    "max_cache_len": _OWN_CACHE,
    "compile_config": _OWN_CACHE,
    "disable_compile": _OWN_CACHE,
    "prefill_chunk_size": _OWN_CACHE,
    "continuous_batching_config": "only read with cache_implementation='paged' (refused)",
    "_from_model_config": "metadata",
    "transformers_version": "metadata",
    "_commit_hash": "metadata (a field in transformers 5.17, gone in 5.24)",
}


def _is(*neutral):
    return lambda value: any(value is n or value == n for n in neutral)


# GenerationConfig fields refused unless neutral: (is_neutral(value), neutral value, reason).
REFUSED_FIELDS: dict[str, tuple[Any, Any, str]] = {
    "num_beams": (_is(None, 1), 1, "beam search"),
    "num_beam_groups": (_is(None, 1), 1, "group beam search"),
    "num_return_sequences": (_is(None, 1), 1, "one sequence per prompt only"),
    "penalty_alpha": (_is(None, 0), None, "contrastive search"),
    "dola_layers": (_is(None), None, "DoLa decoding"),
    "constraints": (_is(None), None, "constrained beam search"),
    "force_words_ids": (_is(None), None, "constrained beam search"),
    "use_mtp": (_is(None, False), None, "multi-token-prediction assisted decoding"),
    "prompt_lookup_num_tokens": (_is(None), None, "prompt lookup decoding"),
    "assistant_early_exit": (_is(None), None, "early-exit assisted decoding"),
    "is_assistant": (_is(None, False), None, "internal flag of assisted decoding"),
    "guidance_scale": (_is(None, 1), None, "classifier-free guidance"),
    "watermarking_config": (_is(None), None, "watermarking"),
    "token_healing": (_is(None, False), None, "token healing rewrites the prompt"),
    "cache_implementation": (
        lambda value: value != "paged",
        None,
        "'paged' switches generate to continuous batching",
    ),
    "return_dict_in_generate": (_is(None, False), None, "specvlm returns the token ids only"),
    "output_scores": (_is(None, False), None, "needs return_dict_in_generate"),
    "output_logits": (_is(None, False), None, "needs return_dict_in_generate"),
    "output_attentions": (_is(None, False), None, "needs return_dict_in_generate"),
    "output_hidden_states": (_is(None, False), None, "needs return_dict_in_generate"),
}

# generate's keyword arguments (its signature, the kwargs it reads, deprecated names).
HONOURED_ARGUMENTS: dict[str, str] = {
    "inputs": "the prompt (as input_ids)",
    "input_ids": "the prompt",
    "generation_config": "merged as generate merges it",
    "logits_processor": "merged into the pipeline as generate merges it",
    "stopping_criteria": "merged into the stopping criteria as generate merges them",
    "prefix_allowed_tokens_fn": "a PrefixConstrainedLogitsProcessor, batch id 0 for every row",
    "streamer": "GenerationSetup.streamer: the prompt, each emitted token, end()",
    "tokenizer": "for stop_strings, as generate",
    "trust_remote_code": "only read with custom_generate (refused): " + _NO_EFFECT,
    "synced_gpus": "False / None on a single process; True is refused",
    "max_length": "see HONOURED_FIELDS",
    "min_length": "see HONOURED_FIELDS",
    "cache_implementation": "see REFUSED_FIELDS ('paged' only)",
}
REFUSED_ARGUMENTS: dict[str, str] = {
    "assistant_model": "assisted decoding (specvlm's draft is the assistant)",
    "assistant_tokenizer": "assisted decoding",
    "custom_generate": "a custom decoding loop",
    "negative_prompt_ids": "classifier-free guidance",
    "negative_prompt_attention_mask": "classifier-free guidance",
    "cache": "a cache passed in (specvlm keeps its own caches)",
    "past_key_values": "a cache passed in (specvlm keeps its own caches)",
    "cache_params": "a cache passed in (specvlm keeps its own caches)",
    "inputs_embeds": "prompts given as embeddings (pass input_ids)",
}


def _shown(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"<tensor {list(value.shape)}>"
    if isinstance(value, torch.nn.Module):
        return f"<{type(value).__name__}>"
    shown = " ".join(repr(value).split())
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _refuse(name: str, value, reason: str, fix: str) -> NotImplementedError:
    shown = _shown(value)
    return NotImplementedError(
        f"generate option {name}={shown} is not supported by specvlm ({reason}); {fix}"
    )


# -------------------------------------------------------------------------------------------
# resolve
# -------------------------------------------------------------------------------------------
@dataclass
class GenerationSetup:
    """One ``generate`` call, resolved. Built by :func:`resolve`; read-only for the loop."""

    generation_config: GenerationConfig = field(repr=False)  # merged, lengths resolved (a copy)
    input_ids: torch.Tensor  # [1, L] the prompt
    model_inputs: dict  # everything else for the model (attention_mask, pixel_values_videos...)
    logits_processor: LogitsProcessorList  # generate's, warpers included when sampling
    stopping_criteria: StoppingCriteriaList  # generate's, user criteria merged
    do_sample: bool
    max_length: int  # the sequence stops at this length (prompt included)
    max_new_tokens: int  # = max_length - L: an upper bound; other criteria may stop earlier
    eos_token_ids: frozenset[int]  # the config's EOS ids (what the processors use)
    stop_token_ids: frozenset[int]  # ids whose emission always ends generation (EOS criteria)
    pad_token_id: int | None
    generator: torch.Generator | None = None  # sampling RNG (None: torch's global RNG)
    streamer: Any = None
    tokenizer: Any = None
    _stages: list = field(default_factory=list, repr=False)
    _fast_stop: bool = field(default=False, repr=False)

    @property
    def device(self) -> torch.device:
        """Where generate keeps the sequence and processes scores: the prompt's device."""
        return self.input_ids.device

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1]

    @property
    def processes_scores(self) -> bool:
        """Whether any logits processor runs (else the scores are the logits, and the rows'
        sequences are not needed)."""
        return bool(self._stages)


def resolve(model, input_ids, generation_config=None, kwargs: dict | None = None):
    """Resolve a ``generate(input_ids, generation_config=..., **kwargs)`` call on ``model``
    (the target) as transformers' ``generate`` does, or raise before any work.

    ``kwargs``: everything else the call received (options, model inputs such as
    ``attention_mask`` / ``pixel_values_videos``, ``logits_processor``, ``stopping_criteria``,
    ``prefix_allowed_tokens_fn``, ``streamer``, ``tokenizer``, and specvlm's ``generator``).
    Raises ``NotImplementedError`` (one line naming the option) for what the speculative loop
    cannot honour, and whatever ``generate`` raises for invalid options (typos, a prompt longer
    than ``max_length``, ``stop_strings`` without a tokenizer, ...). Warns as ``generate`` warns.
    """
    kwargs = dict(kwargs or {})
    generator, args = _call_arguments(kwargs)
    kwargs["input_ids"] = input_ids
    mode_kwargs = decoder.generation_mode_kwargs(
        model, kwargs, args["synced_gpus"], None, args["streamer"]
    )
    if mode_kwargs.get("synced_gpus"):
        raise _refuse("synced_gpus", True, "one process only", "pass synced_gpus=False")
    defaults = _default_lengths(model, generation_config, kwargs)
    gc, model_kwargs = decoder.merged_generation_config(model, generation_config, kwargs)
    _check_fields(gc)
    mode = gc.get_generation_mode(None)
    if mode not in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE):
        raise NotImplementedError(f"generation mode {mode!s} is not supported by specvlm")
    decoder.validate_model_kwargs(model, model_kwargs)
    prompt, model_kwargs = _prompt(model, args["inputs"], gc, model_kwargs)
    # generate's step 6: the length; step 8: processors and stopping criteria.
    gc = decoder.resolve_generation_length(model, gc, *defaults, prompt)
    processors = decoder.generation_logits_processor(
        model,
        gc,
        prompt,
        prefix_allowed_tokens_fn=args["prefix_allowed_tokens_fn"],
        logits_processor=args["logits_processor"] or LogitsProcessorList(),
        negative_prompt_ids=None,
        negative_prompt_attention_mask=None,
    )
    criteria = decoder.generation_stopping_criteria(
        model, gc, args["stopping_criteria"] or StoppingCriteriaList(), mode_kwargs.get("tokenizer")
    )
    return _setup(gc, prompt, model_kwargs, processors, criteria, generator, args, mode_kwargs)


# The arguments of ``generate`` that are not generation options.
_CALL_ARGUMENTS = (
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "synced_gpus",
    "assistant_model",
    "streamer",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
    "custom_generate",
    "trust_remote_code",
    "inputs",
)


def _call_arguments(kwargs: dict) -> tuple[torch.Generator | None, dict]:
    """Take specvlm's ``generator`` and ``generate``'s own arguments out of ``kwargs``; refuse
    what the loop cannot honour."""
    generator = kwargs.pop("generator", None)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    args = {name: kwargs.pop(name, None) for name in _CALL_ARGUMENTS}
    for name, reason in REFUSED_ARGUMENTS.items():
        value = args.get(name, kwargs.get(name))
        if value is not None:
            raise _refuse(name, value, reason, f"leave {name} unset")
    if args["synced_gpus"]:
        raise _refuse("synced_gpus", True, "one process only", "pass synced_gpus=False")
    return generator, args


def _default_lengths(model, generation_config, kwargs: dict) -> tuple[bool, bool]:
    """Whether ``max_length`` / ``min_length`` are left at their defaults (the call, its
    config and the model's config all unset), as ``generate`` records before merging."""

    def unset(name: str) -> bool:
        return (
            kwargs.get(name) is None
            and (generation_config is None or getattr(generation_config, name) is None)
            and getattr(model.generation_config, name) is None
        )

    return unset("max_length"), unset("min_length")


def _prompt(model, inputs, gc: GenerationConfig, model_kwargs: dict) -> tuple:
    """``generate``'s step 3, the prompt: ``input_ids`` of batch 1, unpadded; the special
    tokens prepared. Returns it and the model kwargs (an attention mask added)."""
    prompt, input_name, model_kwargs = decoder.generation_inputs(model, inputs, gc, model_kwargs)
    if input_name != "input_ids" or model_kwargs.get("inputs_embeds") is not None:
        raise _refuse("inputs_embeds", prompt, REFUSED_ARGUMENTS["inputs_embeds"], "pass input_ids")
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2:
        raise ValueError("input_ids must be a [batch, length] tensor")
    if prompt.shape[0] != 1:
        raise NotImplementedError(
            f"batch size {prompt.shape[0]} is not supported by specvlm (batch size 1 only)"
        )
    mask = model_kwargs.get("attention_mask")
    decoder.prepare_special_tokens(model, gc, mask is not None, prompt.device)
    if mask is None:
        mask = decoder.generation_attention_mask(model, prompt, gc, model_kwargs)
    if not bool((mask == 1).all()):
        raise NotImplementedError(
            "padded prompts (zeros in attention_mask, or pad tokens in input_ids without a "
            "mask) are not supported by specvlm"
        )
    return prompt, model_kwargs


def _setup(gc, prompt, model_kwargs, processors, criteria, generator, args, mode_kwargs):
    """The :class:`GenerationSetup` of the resolved call."""
    max_lengths = [c.max_length for c in criteria if isinstance(c, MaxLengthCriteria)]
    max_length = min(max_lengths) if max_lengths else int(gc.max_length)
    eos, pad = decoder.special_token_tensors(gc)
    stop_ids = [c.eos_token_id for c in criteria if type(c) is EosTokenCriteria]
    return GenerationSetup(
        generation_config=gc,
        input_ids=prompt,
        model_inputs=model_kwargs,
        logits_processor=processors,
        stopping_criteria=criteria,
        do_sample=bool(gc.do_sample),
        max_length=max_length,
        max_new_tokens=max_length - prompt.shape[1],
        eos_token_ids=frozenset(eos.tolist()) if eos is not None else frozenset(),
        stop_token_ids=frozenset(int(t) for ids in stop_ids for t in ids.reshape(-1).tolist()),
        pad_token_id=int(pad) if pad is not None else None,
        generator=generator,
        streamer=args["streamer"],
        tokenizer=mode_kwargs.get("tokenizer"),
        _stages=_stages(processors),
        _fast_stop=all(type(c) in (MaxLengthCriteria, EosTokenCriteria) for c in criteria),
    )


def _check_fields(gc: GenerationConfig) -> None:
    """Refuse non-neutral REFUSED_FIELDS, and fields this module does not know (a later
    transformers) unless they hold their default."""
    for name, (is_neutral, neutral, reason) in REFUSED_FIELDS.items():
        value = getattr(gc, name, None)
        if not is_neutral(value):
            fix = f"pass {name}={neutral!r}" if neutral is not None else f"leave {name} unset"
            raise _refuse(name, value, reason, fix)
    defaults = decoder.default_generation_params()
    for name in vars(GenerationConfig()):
        if name in HONOURED_FIELDS or name in REFUSED_FIELDS:
            continue
        value = getattr(gc, name, None)
        if value is not None and not _equal(value, defaults.get(name)):
            raise _refuse(
                name, value, "an option this specvlm version does not know", "leave it unset"
            )


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors of several values
        return False


# -------------------------------------------------------------------------------------------
# Scores
# -------------------------------------------------------------------------------------------
# Processors whose output row i depends only on input row i through elementwise operations,
# gathers / scatters and exact selections (no sums over the vocabulary, whose order could depend
# on the batch shape on CUDA), so a call on several rows of one length gives bit for bit the rows
# of batch-1 calls (read from their source; tested on CPU). Checked per type (``type(p) is``, not
# subclasses); RepetitionPenalty only without a per-row prompt_ignore_length.
_ROW_LOCAL = (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    SuppressTokensLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    ExponentialDecayLengthPenalty,
)


def _row_local(processor) -> bool:
    if type(processor) not in _ROW_LOCAL:
        return False
    return not isinstance(getattr(processor, "prompt_ignore_length", None), torch.Tensor)


def _stages(processors: LogitsProcessorList) -> list[tuple[LogitsProcessorList, bool]]:
    """Consecutive runs of row-local / other processors, in order."""
    stages: list[tuple[LogitsProcessorList, bool]] = []
    for processor in processors:
        local = _row_local(processor)
        if stages and stages[-1][1] == local:
            stages[-1][0].append(processor)
        else:
            stages.append((LogitsProcessorList([processor]), local))
    return stages


def _as_row(sequence, device) -> torch.Tensor:
    if not isinstance(sequence, torch.Tensor):
        sequence = torch.tensor(list(sequence), dtype=torch.long)
    if sequence.dim() == 1:
        sequence = sequence[None]
    if sequence.dim() != 2 or sequence.shape[0] != 1:
        raise ValueError(f"each sequence must be [L] or [1, L], got {tuple(sequence.shape)}")
    return sequence.to(device)


def process_scores(setup: GenerationSetup, sequences, logits: torch.Tensor) -> torch.Tensor:
    """The scores ``generate`` would sample from (or take the argmax of) after each sequence.

    ``sequences``: one per row of ``logits``, each the full sequence that row's logits follow
    (prompt + emitted tokens + the tree path to the node), a 1-D / ``[1, L]`` tensor or a list of
    ints; rows may have different lengths. ``logits`` ``[R, V]`` (any float dtype, any device).
    Returns fp32 ``[R, V]`` on ``setup.device``: row ``r`` is ``logits_processor(sequence_r,
    logits_r.float())`` as ``generate`` computes it for a batch of one (processors that are
    provably row-independent run once per group of equal-length rows, with identical results).
    With no processor active this is ``logits`` itself in fp32 (no copy when already fp32).
    """
    if logits.dim() != 2 or logits.shape[0] != len(sequences):
        raise ValueError(
            f"logits must be [rows, vocab] with one row per sequence, got {tuple(logits.shape)} "
            f"for {len(sequences)} sequences"
        )
    device = setup.device
    if not setup._stages:
        return logits.to(device=device, dtype=torch.float32)
    ids = [_as_row(s, device) for s in sequences]
    # As generate: a fp32 copy of each row's logits on the prompt's device (one copy for all).
    rows = list(logits.to(copy=True, dtype=torch.float32, device=device).split(1))
    groups: dict[int, list[int]] | None = None
    for stage, local in setup._stages:
        if not local:
            rows = [stage(ids[r], rows[r]) for r in range(len(rows))]
            continue
        if groups is None:
            groups = {}
            for r, seq in enumerate(ids):
                groups.setdefault(seq.shape[1], []).append(r)
        for members in groups.values():
            if len(members) == 1:
                rows[members[0]] = stage(ids[members[0]], rows[members[0]])
                continue
            out = stage(torch.cat([ids[r] for r in members]), torch.cat([rows[r] for r in members]))
            for r, row in zip(members, out.split(1), strict=True):
                rows[r] = row
    return torch.cat(rows)


# -------------------------------------------------------------------------------------------
# Stopping
# -------------------------------------------------------------------------------------------
def stops(setup: GenerationSetup, sequence) -> bool:
    """Whether ``generate`` ends with ``sequence`` (prompt + every token emitted so far, the last
    one just appended): the stopping criteria as ``generate`` calls them after each token
    (``scores`` None, as without ``output_scores``). ``sequence``: 1-D / ``[1, L]`` / ints."""
    if setup._fast_stop:
        if isinstance(sequence, torch.Tensor):
            length, last = sequence.shape[-1], int(sequence.reshape(-1)[-1])
        else:
            sequence = list(sequence)
            length, last = len(sequence), int(sequence[-1])
        return _fast_stop(setup, length, last)
    return bool(setup.stopping_criteria(_as_row(sequence, setup.device), None)[0])


def _fast_stop(setup: GenerationSetup, length: int, last: int) -> bool:
    # Only MaxLengthCriteria / EosTokenCriteria: length >= max_length, or the last token is EOS.
    return length >= setup.max_length or last in setup.stop_token_ids


class GeneratedSequence:
    """The sequence ``generate`` holds: the prompt, then each emitted token (on
    ``setup.device``, grown in place), with the stop decision per token."""

    def __init__(self, setup: GenerationSetup):
        self.setup = setup
        prompt = setup.input_ids[0]
        self._buffer = torch.empty(
            prompt.numel() + max(setup.max_new_tokens, 1), dtype=prompt.dtype, device=prompt.device
        )
        self._buffer[: prompt.numel()] = prompt
        self._length = prompt.numel()
        self.new_tokens: list[int] = []

    def __len__(self) -> int:
        return self._length

    def ids(self) -> torch.Tensor:
        """``[1, n]``: prompt + emitted tokens (a view; do not modify)."""
        return self._buffer[None, : self._length]

    def extended(self, path) -> torch.Tensor:
        """``[1, n + len(path)]``: the sequence followed by ``path`` (a tree node's tokens)."""
        path = torch.as_tensor(list(path), dtype=self._buffer.dtype).to(self._buffer.device)
        return torch.cat([self._buffer[: self._length], path])[None]

    def append(self, token: int) -> bool:
        """Append one emitted token; True when ``generate`` stops after it."""
        if self._length == self._buffer.numel():
            grown = torch.empty(
                2 * self._length, dtype=self._buffer.dtype, device=self._buffer.device
            )
            grown[: self._length] = self._buffer
            self._buffer = grown
        self._buffer[self._length] = int(token)
        self._length += 1
        self.new_tokens.append(int(token))
        if self.setup._fast_stop:
            return _fast_stop(self.setup, self._length, int(token))
        return bool(self.setup.stopping_criteria(self.ids(), None)[0])
