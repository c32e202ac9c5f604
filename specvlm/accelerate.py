"""``specvlm.accelerate((target, draft))``: the object users hold, and its ``generate`` loop.

One ``generate`` call, top to bottom (see ``docs/design.md``):

1. **Target prefill + scores.** The target's multimodal wrapper runs unchanged up to its text
   decoder (:func:`~specvlm.decoder.capture_decoder_inputs`); the decoder prefills the prompt
   with its own attention while :mod:`specvlm.attention` adds each layer's text-to-video
   attention into one fp32 buffer. The last logits give the first new token.
2. **Pruning.** The selector picks ``keep = int(Nv * (1 - drop_rate))`` grid tokens.
3. **Draft prefill** on the text and the kept video tokens only, with positions from
   :meth:`~specvlm.families.Family` (1-D compacted or original; M-RoPE: original 3-D).
4. **Speculate / verify** until EOS or the token budget: the draft expands the static tree
   level by level, the target scores every node in one forward (tree attention), greedy
   acceptance keeps the longest confirmed path plus the target's own next token, and both
   caches keep only that path.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from specvlm import positions, selectors
from specvlm.attention import AttentionPlan, attention_plan, routed_attention
from specvlm.decoder import capture_decoder_inputs, decoder_forward, new_cache
from specvlm.devices import cuda_devices, synchronized_now
from specvlm.drafting import DraftPlan, draft_tree
from specvlm.families import Family, VideoLayout, family_of
from specvlm.penalty import RepetitionPenalty
from specvlm.runner import Side, ones_mask
from specvlm.trees import Tree, default_tree
from specvlm.verify import verify_mask, verify_tree

__all__ = ["GenerationStats", "SpeculativeDecoder", "accelerate"]


@dataclass
class GenerationStats:
    """What the last ``generate`` call did. Times are seconds (device-synchronised)."""

    mean_accepted_length: float = 0.0  # tokens emitted per target verification, bonus included
    target_forwards: int = 0  # prefill + verifications
    draft_forwards: int = 0  # prefill + drafting forwards
    new_tokens: int = 0
    video_tokens: int = 0  # grid tokens of the video (0 without video)
    kept_video_tokens: int = 0  # grid tokens the draft saw
    target_prefill: float = 0.0  # includes scoring
    scoring: float = 0.0
    pruning: float = 0.0
    draft_prefill: float = 0.0
    decode: float = 0.0
    total: float = 0.0
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)  # per CUDA device
    accepted_lengths: list[int] = field(default_factory=list)  # per verification
    drafted_depths: list[int] = field(default_factory=list)  # tree depth drafted, per step
    video_grid: tuple[int, int, int] | None = None  # (T, H, W) of the video tokens
    video_scores: torch.Tensor | None = field(default=None, repr=False)  # CPU fp32 [T*H*W]
    kept_indices: torch.Tensor | None = field(default=None, repr=False)  # CPU long, sorted


# GenerationConfig fields that change greedy choices; not implemented yet, so refused.
_UNSUPPORTED_DEFAULTS = {
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "min_length": 0,
    "min_new_tokens": None,
    "exponential_decay_length_penalty": None,
    "stop_strings": None,
    "return_dict_in_generate": False,
    "num_return_sequences": 1,
}


def accelerate(
    models: Sequence[nn.Module],
    *,
    drop_rate: float = 0.9,
    mass: float = 0.4,
    selector="two_stage",
    tree=None,
    draft_positions: str | None = None,
    min_draft_confidence: float = 0.0,
    seed: int = 0,
) -> SpeculativeDecoder:
    """Wrap ``(target, draft)`` for lossless speculative decoding with verifier-guided pruning.

    Args:
        models: ``(target, draft)``: two stock transformers models of one supported family
            (LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL) with the same vocabulary.
        drop_rate: share of the video tokens the draft does not see, in ``[0, 1)``.
        mass: Stage I share of the total attention mass (``two_stage`` selector), in ``[0, 1]``.
        selector: ``"two_stage"``, ``"attention"``, ``"uniform"``, ``"random"`` or a callable
            ``(scores [Nv], keep, grid) -> indices``.
        tree: a :class:`~specvlm.trees.Tree`, a list of top-k rank paths, or None (default tree).
        draft_positions: 1-D RoPE families: ``"original"`` (default; kept tokens keep their
            positions, with gaps) or ``"compact"`` (consecutive positions, as the published
            code). M-RoPE families always use the original 3-D positions. Measured in
            ``docs/families.md``: original positions gave the higher acceptance.
        min_draft_confidence: stop drafting a step at the first tree level whose every node
            has a path probability (product of the draft's softmax along the path) below this,
            in ``[0, 1]``; 0 drafts the whole tree. Drafting always stops below EOS nodes.
            Never changes the output, only the work per step.
        seed: seed of the ``random`` selector.
    """
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or len(models) != 2:
        raise TypeError("accelerate expects a pair (target, draft) of models")
    return SpeculativeDecoder(
        models[0], models[1], drop_rate=drop_rate, mass=mass, selector=selector, tree=tree,
        draft_positions=draft_positions, min_draft_confidence=min_draft_confidence, seed=seed,
    )  # fmt: skip


def _check_rate(name: str, value, low: float, high: float, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
    return value


def _as_tree(tree) -> Tree:
    if tree is None:
        return default_tree()
    if isinstance(tree, Tree):
        return tree
    return Tree.from_paths(tree)


class SpeculativeDecoder:
    """The object :func:`accelerate` returns. ``generate`` mirrors ``target.generate`` (greedy)."""

    def __init__(self, target, draft, *, drop_rate, mass, selector, tree, draft_positions,
                 min_draft_confidence=0.0, seed=0):  # fmt: skip
        self.family: Family = family_of(target, "target")
        draft_family = family_of(draft, "draft")
        if draft_family is not self.family:
            raise ValueError(
                f"target ({self.family.display_name}) and draft ({draft_family.display_name}) "
                "must be of the same model family"
            )
        self.target, self.draft = target, draft
        self._check_vocabularies()
        self.drop_rate = _check_rate("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        self.mass = _check_rate("mass", mass, 0.0, 1.0, high_open=False)
        self.min_draft_confidence = _check_rate(
            "min_draft_confidence", min_draft_confidence, 0.0, 1.0, high_open=False
        )
        self.selector = selectors.resolve(selector, mass=self.mass, seed=seed)
        self.selector_name = selector if isinstance(selector, str) else "callable"
        self.tree = _as_tree(tree)
        if draft_positions is None:
            draft_positions = "original"
        if draft_positions not in ("compact", "original"):
            raise ValueError(
                f"draft_positions must be 'compact' or 'original', got {draft_positions!r}"
            )
        if self.family.mrope and draft_positions == "compact":
            raise ValueError(
                f"{self.family.display_name} uses M-RoPE: the draft keeps the original 3-D "
                "positions (draft_positions='original')"
            )
        self.draft_positions = draft_positions
        for role, model in (("target", target), ("draft", draft)):
            self._check_attention(role, model)
        self.last_stats: GenerationStats | None = None

    # ---------------------------------------------------------------------------------------
    # Validation
    # ---------------------------------------------------------------------------------------
    def _check_vocabularies(self) -> None:
        fam = self.family
        t_cfg, d_cfg = fam.text_config(self.target), fam.text_config(self.draft)
        t_vocab = fam.lm_head(self.target).weight.shape[0]
        d_vocab = fam.lm_head(self.draft).weight.shape[0]
        if t_cfg.vocab_size != d_cfg.vocab_size or t_vocab != d_vocab:
            raise ValueError(
                f"target and draft vocabularies differ (target {t_cfg.vocab_size}, draft "
                f"{d_cfg.vocab_size}); the draft must share the target's tokenizer"
            )
        if fam.video_token_id(self.target) != fam.video_token_id(self.draft):
            raise ValueError(
                "target and draft use different video token ids; they must share a tokenizer"
            )
        t_gen, d_gen = self.target.generation_config, self.draft.generation_config
        for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
            t_val, d_val = getattr(t_gen, name, None), getattr(d_gen, name, None)
            if t_val is not None and d_val is not None and _as_set(t_val) != _as_set(d_val):
                raise ValueError(
                    f"target and draft have different {name} ({t_val} vs {d_val}); "
                    "they must share a tokenizer"
                )

    def _check_attention(self, role: str, model) -> None:
        cfg = self.family.text_config(model)
        layer_types = getattr(cfg, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            raise NotImplementedError(
                f"the {role} has non-full attention layers ({sorted(set(layer_types))}); "
                "sliding-window attention is not supported yet"
            )

    def _generation_config(self, generation_config, kwargs: dict):
        gc = copy.deepcopy(generation_config or self.target.generation_config)
        model_inputs = gc.update(**kwargs)
        if gc.do_sample:
            raise NotImplementedError(
                "do_sample=True is not supported yet: specvlm is greedy-only for now "
                "(pass do_sample=False)"
            )
        if (gc.num_beams or 1) > 1:
            raise NotImplementedError("beam search (num_beams > 1) is not supported")
        for name, default in _UNSUPPORTED_DEFAULTS.items():
            value = getattr(gc, name, default)
            if value not in (default, None) and not (name == "min_length" and value == 0):
                raise NotImplementedError(
                    f"generation option {name}={value!r} is not supported yet "
                    f"(pass {name}={default!r} to generate)"
                )
        return gc, model_inputs

    # ---------------------------------------------------------------------------------------
    # generate
    # ---------------------------------------------------------------------------------------
    def generate(self, input_ids=None, *, generation_config=None, streamer=None, **kwargs):
        """Greedy generation, token for token ``target.generate(**inputs, do_sample=False)``.

        Takes the processor's outputs and the usual generation options (``max_new_tokens``,
        ``max_length``, ``eos_token_id``, ...) and returns ``[1, L + new]`` token ids.
        """
        gc, inputs = self._generation_config(generation_config, kwargs)
        if input_ids is None:
            raise ValueError("generate needs input_ids (the processor's output)")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a [batch, length] tensor")
        if input_ids.shape[0] != 1:
            raise NotImplementedError(
                f"batch size {input_ids.shape[0]} is not supported yet (batch size 1 only)"
            )
        mask = inputs.get("attention_mask")
        if mask is not None and not bool(mask.bool().all()):
            raise NotImplementedError("padded prompts (zeros in attention_mask) are not supported")
        prompt_len = input_ids.shape[1]
        if gc.max_new_tokens is not None:
            max_new = int(gc.max_new_tokens)
        else:
            max_new = int(gc.max_length) - prompt_len
        if max_new < 1:
            raise ValueError(
                f"nothing to generate: max_new_tokens / max_length leave {max_new} new tokens "
                f"for a prompt of {prompt_len}"
            )
        eos = _as_set(gc.eos_token_id)
        penalty = gc.repetition_penalty if gc.repetition_penalty not in (None, 1.0) else None
        if penalty is not None and not penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {penalty}")

        snapshots = [
            (m, self.family.snapshot(m)) for m in (self.target, self.draft)
        ]  # fmt: skip
        stats = GenerationStats()
        devices = cuda_devices(self.target, self.draft)
        for dev in devices:
            torch.cuda.reset_peak_memory_stats(dev)
        t_start = synchronized_now(devices)
        try:
            with (
                torch.no_grad(),
                routed_attention(self.family.decoder(self.target)),
                routed_attention(self.family.decoder(self.draft)),
            ):
                new = self._generate(input_ids, inputs, max_new, eos, streamer, stats, devices,
                                     penalty)  # fmt: skip
            if streamer is not None:
                streamer.end()
        finally:
            for model, state in snapshots:
                self.family.restore(model, state)
        stats.total = synchronized_now(devices) - t_start
        for dev in devices:
            stats.peak_memory_bytes[str(dev)] = torch.cuda.max_memory_allocated(dev)
        stats.new_tokens = len(new)
        n_steps = len(stats.accepted_lengths)
        stats.mean_accepted_length = sum(stats.accepted_lengths) / n_steps if n_steps else 0.0
        self.last_stats = stats
        out = torch.tensor([new], dtype=input_ids.dtype, device=input_ids.device)
        return torch.cat([input_ids, out], dim=1)

    def _generate(self, input_ids, inputs, max_new, eos, streamer, stats, devices,
                  penalty) -> list[int]:  # fmt: skip
        fam, tree = self.family, self.tree
        target, draft = self.target, self.draft
        t_dec, d_dec = fam.decoder(target), fam.decoder(draft)
        t_head, d_head = fam.lm_head(target), fam.lm_head(draft)
        prompt_len = input_ids.shape[1]
        inputs = dict(inputs, input_ids=input_ids)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        emitted: list[int] = []
        rep = None
        if penalty is not None:
            vocab, device = t_head.weight.shape[0], t_head.weight.device
            rep = RepetitionPenalty(penalty, input_ids, vocab, device)

        def emit(tokens: list[int]) -> bool:
            """Append tokens up to EOS / the budget; True when generation is finished."""
            for tok in tokens:
                emitted.append(tok)
                if rep is not None:
                    rep.add([tok])
                if streamer is not None:
                    streamer.put(torch.tensor([tok]))
                if tok in eos or len(emitted) >= max_new:
                    return True
            return False

        # 1. Target prefill, scoring the video tokens on the side.
        t0 = synchronized_now(devices)
        layout = fam.video_layout(target, input_ids, inputs)
        t_inputs = _to_device(inputs, _device_of(t_dec))
        t_in = capture_decoder_inputs(target, t_dec, t_inputs)
        plan = AttentionPlan()
        if layout is not None:
            span = layout.span
            plan = AttentionPlan(
                mode="score", video_start=span[0], video_end=span[1], text_start=layout.text_start
            )
        t_cache = new_cache()
        with attention_plan(plan):
            logits = decoder_forward(
                t_dec, t_head, t_cache, t_in.inputs_embeds, t_in.position_ids,
                ones_mask(prompt_len, t_in.inputs_embeds.device),
                logits_rows=slice(prompt_len - 1, prompt_len), extra=t_in.extra,
            )  # fmt: skip
        last = logits[0, -1:].float() if rep is None else rep.last(logits[0, -1:])
        root = int(last[0].argmax())
        stats.target_forwards += 1
        stats.target_prefill = synchronized_now(devices) - t0
        stats.scoring = plan.score_seconds
        t_pos = positions.prompt_positions(
            t_in.position_ids, prompt_len, fam.mrope, t_in.inputs_embeds.device
        )
        t_next = positions.next_positions(t_pos)
        if layout is not None:
            stats.video_tokens = layout.num_tokens
            stats.kept_video_tokens = layout.num_tokens
            scores = _gather_scores(plan.scores, layout)
            stats.video_grid, stats.video_scores = layout.grid, scores.float().cpu()
            stats.kept_indices = torch.arange(layout.num_tokens)
        if root in eos or max_new == 1:  # nothing to speculate: no pruning, no draft prefill
            emit([root])
            return emitted

        # 2. Pruning.
        t0 = synchronized_now(devices)
        keep_seq = torch.ones(prompt_len, dtype=torch.bool)
        if layout is not None and self.drop_rate > 0:
            keep = int(layout.num_tokens * (1.0 - self.drop_rate))
            kept = selectors.run_selector(self.selector, scores, keep, layout.grid)
            keep_seq[layout.positions] = False
            keep_seq[layout.positions[kept]] = True
            stats.kept_video_tokens = keep
            stats.kept_indices = kept
        stats.pruning = synchronized_now(devices) - t0

        # 3. Draft prefill on the kept tokens.
        t0 = synchronized_now(devices)
        d_inputs = _to_device(inputs, _device_of(d_dec))
        d_in = capture_decoder_inputs(draft, d_dec, d_inputs)
        if d_in.inputs_embeds.shape[1] != prompt_len:
            raise ValueError(
                "target and draft expand the prompt to different lengths "
                f"({prompt_len} vs {d_in.inputs_embeds.shape[1]}); their video token layouts "
                "must match"
            )
        d_embeds, d_pos, d_extra = self._prune_draft_inputs(d_in, keep_seq)
        d_cache = new_cache()
        with attention_plan(AttentionPlan()):
            decoder_forward(
                d_dec, d_head, d_cache, d_embeds, d_pos,
                ones_mask(d_embeds.shape[1], d_embeds.device), extra=d_extra,
            )  # fmt: skip
        stats.draft_forwards += 1
        d_next = positions.next_positions(d_pos)
        stats.draft_prefill = synchronized_now(devices) - t0
        # The first new token is handed out once both models hold the prompt: prompt
        # processing (target prefill and scoring, pruning, draft prefill) is time to first
        # token, and decode time is the speculate / verify loop, as in the method's reference
        # timing and transformers' assisted generation (docs/design.md, "Timing").
        emit([root])

        # 4. Speculate / verify.
        t0 = synchronized_now(devices)
        tgt = Side(t_dec, t_head, target.get_input_embeddings(), t_cache, t_next, fam.mrope,
                   t_in.inputs_embeds.device)  # fmt: skip
        drf = Side(d_dec, d_head, draft.get_input_embeddings(), d_cache, d_next, fam.mrope,
                   d_embeds.device)  # fmt: skip
        plan = DraftPlan.of(tree)
        full_mask = verify_mask(tree)
        ancestors = tree.ancestor_mask()
        stop_tokens = frozenset(eos)
        pending = [root]  # tokens the draft has not processed yet; the last one is the root
        while True:
            node_tokens, prefix_len, root_pos = draft_tree(
                drf, plan, pending, stop_tokens, self.min_draft_confidence
            )
            n = len(node_tokens)  # the tree drafted: `tree` cut at some depth
            step_tree = plan.cuts[tree.depths[n - 1]]
            t_base = tgt.length
            adjust = None
            if rep is not None:
                adjust = functools.partial(
                    rep.tree, ancestors=ancestors[:n, :n], node_tokens=node_tokens
                )
            accepted, bonus = verify_tree(
                tgt, step_tree, full_mask[: n + 1, : n + 1], pending[-1], node_tokens, adjust
            )
            stats.accepted_lengths.append(len(accepted) + 1)
            stats.drafted_depths.append(step_tree.depth)
            # Both caches keep only the accepted path. The draft fed every node above the
            # deepest drafted level, in node order (so a fed node's cache offset is its index).
            tgt.keep(t_base, [0] + [1 + a for a in accepted])
            tgt.next_pos = tgt.next_pos + 1 + len(accepted)
            in_draft = [a for a in accepted if step_tree.depths[a] < step_tree.depth]
            drf.keep(prefix_len, in_draft)
            drf.next_pos = root_pos + 1 + len(in_draft)
            pending = [node_tokens[a] for a in accepted if step_tree.depths[a] == step_tree.depth]
            pending.append(bonus)
            if emit([node_tokens[a] for a in accepted] + [bonus]):
                break
        stats.target_forwards += tgt.forwards
        stats.draft_forwards += drf.forwards
        stats.decode = synchronized_now(devices) - t0
        return emitted

    def _prune_draft_inputs(self, d_in, keep_seq: torch.Tensor):
        device = d_in.inputs_embeds.device
        keep_dev = keep_seq.to(device)
        embeds = d_in.inputs_embeds[:, keep_dev]
        full = positions.prompt_positions(
            d_in.position_ids, keep_seq.numel(), self.family.mrope, device
        )
        pos = positions.draft_positions(full, keep_seq, self.draft_positions)
        extra = self.family.prune_extra(d_in.extra, keep_seq)
        return embeds, pos, extra


# -------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------
def _as_set(value) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, torch.Tensor):
        return {int(v) for v in value.reshape(-1).tolist()}
    if isinstance(value, (list, tuple, set)):
        return {int(v) for v in value}
    return {int(value)}


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _to_device(inputs: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def _gather_scores(buffers: dict, layout: VideoLayout) -> torch.Tensor:
    """Sum the per-device score buffers; return the grid tokens' scores ``[T*H*W]``."""
    if not buffers:  # no text after the video: no scores (Stage I selects nothing)
        return torch.zeros(layout.num_tokens)
    devices = list(buffers)
    total = buffers[devices[0]].clone()
    for dev in devices[1:]:
        total += buffers[dev].to(total.device)
    start = layout.span[0]
    return total[0, (layout.positions - start).to(total.device)]
