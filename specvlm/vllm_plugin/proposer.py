"""The ``custom_class`` proposer: a pruned-video SpecVLM draft for every request vLLM serves.

vLLM builds it with the engine config and hands it the target after loading
(:meth:`SpecVLMProposer.load_model`); the worker (:mod:`~specvlm.vllm_plugin.worker`) then gives
it the model runner (:meth:`SpecVLMProposer.attach`). Each step vLLM calls :meth:`propose` with
the tokens just sampled for every request of the batch and expects one list of draft tokens per
request:

* a request seen for the first time, whose prompt holds one video: its prefill has just run,
  with the target's text-to-video attention measured on the side
  (:mod:`~specvlm.vllm_plugin.scoring`); the draft prefills the prompt with the video tokens that
  the selector keeps (:func:`specvlm.speculation.kept_positions`,
  :func:`specvlm.speculation.draft_prefill`: the library's own steps);
  the prefilled cache is copied once into the request's slot of the proposer's
  :class:`~specvlm.vllm_plugin.batched.BatchedDraftCache`;
* then, every step: the slot is cut back to the longest prefix it shares with the request's
  committed tokens (what vLLM accepted: only the slot's length is set), the rest is fed, and the
  draft proposes a chain of ``num_speculative_tokens`` tokens; all requests of the step
  together, one forward of the batch per chain position, each writing its new entries in place
  in its slot (:func:`specvlm.vllm_plugin.batched.draft_chains`, which gives each request what
  :func:`specvlm.drafting.draft_tree` on a chain gives it alone).

vLLM verifies every proposed token with the target (greedy: the target's argmax), so a greedy
request's output is the target's whatever the draft proposes. **Sampled requests get no
proposals** unless ``draft_sampled`` is set (refused on vLLM's CPU backend, whose rejection
sampling is biased: :func:`~specvlm.vllm_plugin.compat.check_sampled_drafts`): they are decoded
by the target alone, exactly as vLLM samples. Requests without a video (or with more than one,
or with images) get no proposals either: plain decoding. A finished or aborted request's draft
state is dropped and its slot freed for the next request (:meth:`release`).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field

import torch

from specvlm import selectors
from specvlm.families import family_of
from specvlm.side import Side
from specvlm.speculation import draft_prefill, kept_positions
from specvlm.vllm_plugin import CONFIG_KEY, validated_settings
from specvlm.vllm_plugin.batched import BatchedDraftCache, draft_chains
from specvlm.vllm_plugin.compat import (
    check_drafted_family,
    check_sampled_drafts,
    check_vllm_version,
)
from specvlm.vllm_plugin.scoring import PrefillScorer

logger = logging.getLogger(__name__)


@dataclass
class DraftState:
    """One request's draft: its :class:`Side` after the pruned prefill (None: plain decoding;
    its cache lives in the proposer's :class:`BatchedDraftCache`, under the request's id), the
    cache length and next position right after the prompt, and the tokens after the prompt that
    its cache holds."""

    side: Side | None
    prompt_len: int
    base_len: int = 0
    base_pos: torch.Tensor | None = None
    fed: list[int] = field(default_factory=list)


@dataclass
class ProposerStats:
    requests: int = 0  # requests that got a draft state
    with_video: int = 0  # ... whose draft was prefilled (the rest decode plainly)
    sampled: int = 0  # requests decoded plainly because they sample (see the module docstring)
    failed: int = 0  # requests decoded plainly because their draft could not be set up
    scored_after_cached_prefix: int = 0  # scored, the prompt's start from vLLM's prefix cache
    unscored_cached_video: int = 0  # not scored: the video itself came from the prefix cache
    scores_reused: int = 0  # ... and pruned with the scores of an earlier request with that video
    released: int = 0
    proposed_tokens: int = 0
    scored: int = 0  # video requests whose target scores were measured
    video_tokens: int = 0
    kept_video_tokens: int = 0
    # the grid tokens each prompt's draft kept, by prompt (a hash of its token ids): what the
    # target's scores chose, comparable between engines (last 64 prompts)
    kept: dict = field(default_factory=dict)


class SpecVLMProposer:
    """See the module docstring. Settings come from ``additional_config["specvlm"]``
    (:func:`specvlm.vllm_plugin.engine_args` writes them)."""

    def __init__(self, vllm_config):
        check_vllm_version()
        spec = vllm_config.speculative_config
        settings = dict((vllm_config.additional_config or {}).get(CONFIG_KEY) or {})
        draft = settings.get("draft")
        if not draft:
            raise ValueError(
                f'additional_config["{CONFIG_KEY}"]["draft"] must name the draft checkpoint '
                "(use specvlm.vllm_plugin.engine_args)"
            )
        self.draft_path = draft
        self.k = int(spec.num_speculative_tokens)
        checked = validated_settings(  # the checks engine_args makes, for hand-written configs
            drop_rate=settings.get("drop_rate", 0.9),
            mass=settings.get("mass", 0.4),
            selector=settings.get("selector", "two_stage"),
            draft_sampled=settings.get("draft_sampled", False),
        )
        self.drop_rate = checked["drop_rate"]
        self.selector = selectors.resolve(checked["selector"], mass=checked["mass"], seed=0)
        from vllm.platforms import current_platform

        self.draft_sampled = check_sampled_drafts(
            checked["draft_sampled"], current_platform.is_cpu()
        )
        self.target_type = getattr(vllm_config.model_config.hf_config, "model_type", None)
        check_drafted_family(self.target_type)
        self.dtype = vllm_config.model_config.dtype
        self.target_vocab = int(vllm_config.model_config.get_vocab_size())
        self.trust_remote_code = bool(vllm_config.model_config.trust_remote_code)
        self.states: dict[str, DraftState] = {}
        self.video_scores: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self.caches = BatchedDraftCache()  # every drafted request's draft cache, one slot each
        self.stats = ProposerStats()
        self.scorer = PrefillScorer(self._needs_scores)
        self.runner = None
        self.model = None
        self.family = None

    # ---------------------------------------------------------------- set-up
    def load_model(self, target_model) -> None:
        """Load the draft next to the target (vLLM calls this after loading the target)."""
        from transformers import AutoConfig, AutoModelForImageTextToText

        device = next(target_model.parameters()).device
        config = AutoConfig.from_pretrained(
            self.draft_path, trust_remote_code=self.trust_remote_code
        )
        model = AutoModelForImageTextToText.from_pretrained(
            self.draft_path, config=config, dtype=self.dtype
        )
        self.model = model.to(device).eval()
        self.family = family_of(self.model, "draft")
        if self.target_type is not None and self.family.model_type != self.target_type:
            raise ValueError(
                f"the SpecVLM draft ({self.draft_path}) is a {self.family.model_type} model but "
                f"the target is {self.target_type}: the draft must be of the target's family"
            )

    def attach(self, runner) -> None:
        """Called by the worker once the runner holds the target: wrap its attention layers (and
        give the scorer the tensor-parallel group, whose ranks each see a shard of the heads)."""
        from vllm.distributed import get_tp_group

        self.runner = runner
        group = get_tp_group()
        self.scorer.group = group if group.world_size > 1 else None
        layers = runner.vllm_config.compilation_config.static_forward_context
        self.scorer.install(
            runner,
            {
                name: layer
                for name, layer in layers.items()
                if hasattr(layer, "impl") and _is_decoder_attention(layer)
            },
        )

    # ---------------------------------------------------------------- per step
    def begin_step(self, scheduler_output) -> None:
        """Before the forward (the worker calls it): free finished and aborted requests, and let
        the scorer find this step's prompt chunks."""
        for rid in scheduler_output.finished_req_ids:
            self.release(rid)
        self.scorer.begin_step(
            scheduler_output.num_scheduled_tokens, bool(scheduler_output.scheduled_new_reqs)
        )

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, slot_mappings=None):
        if self.runner is None:
            raise RuntimeError(
                "SpecVLMProposer runs with vLLM's --worker-cls "
                "specvlm.vllm_plugin.worker.SpecVLMWorker (see specvlm.vllm_plugin.engine_args)"
            )
        self.scorer.end_step()
        drafts: list[list[int]] = [[] for _ in self.runner.input_batch.req_ids]
        batch: list[tuple[int, DraftState, list[int]]] = []  # (row, state, committed)
        for row, rid in enumerate(self.runner.input_batch.req_ids):
            if row >= len(sampled_token_ids) or not sampled_token_ids[row]:
                continue  # still prefilling, or nothing new this step
            state = self.states.get(rid)
            if state is None:
                state = self.states[rid] = self._start(rid)
            if state.side is not None:
                n = int(num_tokens_no_spec[row])
                committed = [int(t) for t in token_ids_cpu[row, state.prompt_len : n]]
                batch.append((row, state, committed))
        for row, chain_tokens in self._draft(batch):
            drafts[row] = chain_tokens
        self.stats.proposed_tokens += sum(len(d) for d in drafts)
        return drafts

    def release(self, req_id: str) -> None:
        """Drop a finished or aborted request's draft state."""
        self.scorer.release(req_id)
        self.caches.release(req_id)
        if self.states.pop(req_id, None) is not None:
            self.stats.released += 1

    # ---------------------------------------------------------------- internals
    def _video(self, rid: str):
        """``(prompt_ids, video tensors)`` of a greedy request with exactly one video and no
        other multimodal item; None otherwise."""
        request = self.runner.requests.get(rid)
        if request is None or not request.prompt_token_ids:
            return None
        if _samples(request) and not self.draft_sampled:
            return None
        features = list(request.mm_features or [])
        if len(features) != 1 or features[0].modality != "video" or features[0].data is None:
            if features:
                logger.info(
                    "specvlm: request %s has %s; only one video per prompt is drafted, it "
                    "decodes without speculation",
                    rid,
                    ", ".join(f.modality for f in features),
                )
            return None
        return list(request.prompt_token_ids), features[0].data.get_data()

    def _inputs(self, prompt_ids: list[int], video: dict) -> dict:
        """The draft's transformers inputs for the prompt and its video (batch 1)."""
        ids = torch.tensor([prompt_ids])
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        pixels = video["pixel_values_videos"]
        if self.family.model_type == "llava_onevision":
            inputs["pixel_values_videos"] = pixels.reshape(1, *pixels.shape[-4:])
        else:
            inputs["pixel_values_videos"] = pixels
            inputs["video_grid_thw"] = video["video_grid_thw"].reshape(1, 3)
            if "second_per_grid_ts" in video:
                inputs["second_per_grid_ts"] = video["second_per_grid_ts"].reshape(1)
            video_id = self.family.video_token_id(self.model)
            inputs["mm_token_type_ids"] = (ids == video_id).long() * 2
        dtype = next(self.model.parameters()).dtype
        return {k: v.to(dtype) if k.startswith("pixel_values") else v for k, v in inputs.items()}

    def _needs_scores(self, rid: str):
        """``(layout, prompt_len)`` for a new request whose video is to be pruned, else None
        (also when its inputs cannot be read: the request is then decoded plainly)."""
        try:
            return self._layout_to_score(rid)
        except Exception as err:  # never take the engine down: this only costs speed
            self._give_up(rid, "reading its video", err)
            return None

    def _layout_to_score(self, rid: str):
        if self.drop_rate <= 0 or rid in self.states:
            return None
        found = self._video(rid)
        if found is None:
            return None
        prompt_ids, video = found
        inputs = self._inputs(prompt_ids, video)
        layout = self.family.video_layout(self.model, inputs["input_ids"], inputs)
        return None if layout is None else (layout, len(prompt_ids))

    def _start(self, rid: str) -> DraftState:
        """The request's first proposal: prune with the measured scores, prefill the draft (a
        request whose draft cannot be prefilled is decoded plainly)."""
        self.stats.requests += 1
        try:
            return self._prefill(rid)
        except Exception as err:  # never take the engine down: this only costs speed
            self._give_up(rid, "prefilling its draft", err)
            request = self.runner.requests.get(rid)
            return DraftState(None, len(request.prompt_token_ids or []) if request else 0)

    def _give_up(self, rid: str, doing: str, err: Exception) -> None:
        self.stats.failed += 1
        logger.warning(
            "specvlm: request %s is decoded without a draft: %s failed: %s: %s",
            rid,
            doing,
            type(err).__name__,
            err,
        )

    @torch.inference_mode()
    def _prefill(self, rid: str) -> DraftState:
        found = self._video(rid)
        request = self.runner.requests.get(rid)
        prompt_len = len(request.prompt_token_ids or []) if request is not None else 0
        measured = self.scorer.take(rid)
        if found is None:
            if request is not None and _samples(request) and not self.draft_sampled:
                self.stats.sampled += 1
                if self.stats.sampled == 1:
                    logger.info(
                        "specvlm: sampled requests are decoded by the target alone (greedy ones "
                        "are drafted; engine_args(draft_sampled=True) drafts them too, on CUDA)"
                    )
            return DraftState(None, prompt_len)
        prompt_ids, video = found
        inputs = self._inputs(prompt_ids, video)
        layout = self.family.video_layout(self.model, inputs["input_ids"], inputs)
        scores = self._scores(request, measured)
        keep_seq, kept = kept_positions(
            len(prompt_ids), layout, scores, self.drop_rate, self.selector
        )
        side = draft_prefill(
            self.family,
            self.model,
            inputs,
            keep_seq,
            "original",
            self.target_vocab,
            prompt_position_ids=self._engine_positions(request, len(prompt_ids)),
        )
        self.stats.with_video += 1
        video_tokens = layout.num_tokens if layout is not None else 0
        kept_count = kept.numel() if kept is not None else video_tokens
        self.stats.video_tokens += video_tokens
        self.stats.kept_video_tokens += kept_count
        if kept is not None:
            self.stats.kept[hash(tuple(prompt_ids))] = kept.tolist()
            while len(self.stats.kept) > 64:
                self.stats.kept.pop(next(iter(self.stats.kept)))
        self.caches.admit(rid, side.cache)  # the one copy of the prefilled cache
        base_len, side.cache = self.caches.length(rid), None
        return DraftState(
            side,
            len(prompt_ids),
            base_len=base_len,
            base_pos=side.next_pos.clone(),
        )

    def _scores(self, request, measured) -> torch.Tensor | None:
        """The request's video scores: measured in its prefill; else, where its video came from
        vLLM's prefix cache (unscored), those of the last request with the same video (asked
        another question of it, typically: an approximation, for the pruning only); else None
        (Stage II alone)."""
        scores = measured.grid_scores(self.scorer.layers) if measured is not None else None
        key = _video_key(request)
        if scores is not None:
            self.stats.scored += 1
            self.stats.scored_after_cached_prefix += bool(measured.origin)
            if key is not None:
                self.video_scores[key] = scores
                self.video_scores.move_to_end(key)
                while len(self.video_scores) > VIDEO_SCORES_KEPT:
                    self.video_scores.popitem(last=False)
        elif measured is not None and not measured.scorable:
            scores = self.video_scores.get(key) if key is not None else None
            if scores is not None:
                self.stats.scores_reused += 1
            else:
                self.stats.unscored_cached_video += 1
        return scores

    def _engine_positions(self, request, prompt_len: int) -> torch.Tensor | None:
        """vLLM's own M-RoPE positions of the prompt ``[3, 1, L]`` (None for 1-D RoPE): the
        draft's prompt positions are the target's, even where vLLM's rope index and
        transformers' differ (seen with tiny Qwen2.5-VL videos of 4 temporal patches); decoding
        continues from the last one plus one, as vLLM does for prompts ending in text."""
        mrope = getattr(request, "mrope_positions", None)
        if not self.family.mrope or mrope is None:
            return None
        return mrope[:, :prompt_len].reshape(mrope.shape[0], 1, prompt_len).long()

    @torch.inference_mode()
    def _draft(self, batch: list[tuple[int, DraftState, list[int]]]):
        """Each request's draft cut back to what it shares with its committed tokens, fed the
        rest, and a chain of ``k`` proposed; all requests together, one forward per chain
        position (:func:`~specvlm.vllm_plugin.batched.draft_chains`). Returns (row, chain)."""
        pending, keys = [], []
        for row, state, committed in batch:
            shared = 0
            for mine, theirs in zip(state.fed, committed, strict=False):
                if mine != theirs:
                    break
                shared += 1
            shared = min(shared, len(committed) - 1)  # the last committed token is the root
            rid = self.runner.input_batch.req_ids[row]
            self.caches.cut(rid, state.base_len + shared)
            state.side.next_pos = state.base_pos + shared
            pending.append(committed[shared:])
            keys.append(rid)
        sides = [state.side for _, state, _ in batch]
        try:
            chains = draft_chains(self.caches, keys, sides, pending, self.k)
        except Exception as err:  # never take the engine down: these requests decode plainly
            for rid, (_, state, _) in zip(keys, batch, strict=True):
                state.side = None
                self.caches.release(rid)
            self._give_up(f"{len(batch)} requests", "drafting", err)
            return []
        out = []
        for (row, state, committed), chain_tokens in zip(batch, chains, strict=True):
            state.fed = committed + chain_tokens[:-1]  # the last drafted token is never fed
            out.append((row, chain_tokens))
        return out

    def live_states(self) -> int:
        """Requests this proposer holds anything for (draft state, scores, or a record)."""
        held = set(self.states) | set(self.scorer.pending) | self.scorer.seen
        return len(held | set(self.caches.slot_of))


VIDEO_SCORES_KEPT = 256  # videos whose scores are kept for a later request with the same video


def _video_key(request) -> str | None:
    """vLLM's hash of the request's one video (None if it has none or several)."""
    features = list(getattr(request, "mm_features", None) or [])
    if len(features) != 1:
        return None
    return getattr(features[0], "identifier", None) or getattr(features[0], "mm_hash", None)


def _samples(request) -> bool:
    """Whether a request samples (temperature above vLLM's greedy threshold)."""
    params = getattr(request, "sampling_params", None)
    return params is not None and float(params.temperature) >= _GREEDY_BELOW


_GREEDY_BELOW = 1e-5  # vLLM's _SAMPLING_EPS: a lower temperature is greedy


def _is_decoder_attention(layer) -> bool:
    """A decoder self-attention layer (not an encoder's or a cross-attention one)."""
    kind = getattr(layer, "attn_type", "decoder")
    return str(getattr(kind, "value", kind)).lower() == "decoder"
