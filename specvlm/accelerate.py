"""``specvlm.accelerate((target, draft))``: the object users hold.

:func:`accelerate` validates the pair and the settings once; :meth:`SpeculativeDecoder.generate`
resolves the generation options (refusing what it cannot honour before any work), runs the loop
of :mod:`specvlm.speculation` with both models' attention routed through
:mod:`specvlm.attention`, restores the models, and returns the sequence.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from specvlm import selectors
from specvlm.attention import routed_attention
from specvlm.choice import TokenChooser
from specvlm.devices import cuda_devices, synchronized_now
from specvlm.families import Family, family_of
from specvlm.speculation import Run, Settings, generate_tokens
from specvlm.stats import GenerationStats
from specvlm.trees import Tree, default_tree

__all__ = ["GenerationStats", "SpeculativeDecoder", "accelerate"]


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
        self._check_tree_ranks()
        self.settings = Settings(
            self.family,
            self.drop_rate,
            self.selector,
            self.tree,
            self.draft_positions,
            self.min_draft_confidence,
        )
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

    def _check_tree_ranks(self) -> None:
        vocab = self.family.lm_head(self.draft).weight.shape[0]
        if self.tree.max_rank() >= vocab:
            raise ValueError(
                f"the tree uses the draft's rank-{self.tree.max_rank()} token, but the draft's "
                f"vocabulary has only {vocab} tokens"
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
        head = self.family.lm_head(self.target)
        chooser = TokenChooser(eos, penalty, head.weight.shape[0], head.weight.device)

        def stops(sequence: list[int]) -> bool:
            return sequence[-1] in eos or len(sequence) - prompt_len >= max_new

        devices = cuda_devices(self.target, self.draft)
        run = Run(
            self.settings,
            self.target,
            self.draft,
            dict(inputs, input_ids=input_ids),
            chooser,
            stops,
            streamer,
            devices,
        )
        self.last_stats = self._run(run)
        new = torch.tensor([run.emitted], dtype=input_ids.dtype, device=input_ids.device)
        return torch.cat([input_ids, new], dim=1)

    def _run(self, run: Run) -> GenerationStats:
        """Run the loop with both models' attention routed, and put the models back as they
        were (also on error)."""
        snapshots = [(m, self.family.snapshot(m)) for m in (self.target, self.draft)]
        for dev in run.devices:
            torch.cuda.reset_peak_memory_stats(dev)
        t_start = synchronized_now(run.devices)
        try:
            with (
                torch.no_grad(),
                routed_attention(self.family.decoder(self.target)),
                routed_attention(self.family.decoder(self.draft)),
            ):
                generate_tokens(run)
            if run.streamer is not None:
                run.streamer.end()
        finally:
            for model, state in snapshots:
                self.family.restore(model, state)
        stats = run.stats
        stats.total = synchronized_now(run.devices) - t_start
        for dev in run.devices:
            stats.peak_memory_bytes[str(dev)] = torch.cuda.max_memory_allocated(dev)
        stats.new_tokens = len(run.emitted)
        stats.finish()
        return stats


def _as_set(value) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, torch.Tensor):
        return {int(v) for v in value.reshape(-1).tolist()}
    if isinstance(value, (list, tuple, set)):
        return {int(v) for v in value}
    return {int(value)}
