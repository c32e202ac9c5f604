"""``specvlm.accelerate((target, draft))``: the object users hold.

:func:`accelerate` validates the pair and the settings once; :meth:`SpeculativeDecoder.generate`
resolves the generation options (refusing what it cannot honour before any work), runs the loop
of :mod:`specvlm.speculation` with both models' attention routed through
:mod:`specvlm.attention`, restores the models, and returns the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from specvlm import generation, selectors
from specvlm.attention import routed_attention
from specvlm.choice import CHILDREN, TokenChooser
from specvlm.devices import cuda_devices, synchronized_now
from specvlm.families import Family, family_of
from specvlm.generation import GeneratedSequence
from specvlm.speculation import Run, Settings, generate_tokens
from specvlm.stats import GenerationStats
from specvlm.trees import Tree, default_tree

__all__ = ["GenerationStats", "SpeculativeDecoder", "accelerate"]


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
    children: str = "top_k",
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
        children: when sampling (``do_sample=True``), how the draft proposes a node's
            children: ``"top_k"`` (its top-k tokens) or ``"sampled"`` (drawn without
            replacement from its processed distribution, verified by recursive rejection
            sampling). Both are lossless; greedy decoding always uses the top-k. Measured in
            ``docs/design.md`` ("Sampling").
    """
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or len(models) != 2:
        raise TypeError("accelerate expects a pair (target, draft) of models")
    return SpeculativeDecoder(
        models[0],
        models[1],
        drop_rate=drop_rate,
        mass=mass,
        selector=selector,
        tree=tree,
        draft_positions=draft_positions,
        min_draft_confidence=min_draft_confidence,
        seed=seed,
        children=children,
    )


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
    """The object :func:`accelerate` returns; ``generate`` is a drop-in for ``target.generate``."""

    def __init__(
        self,
        target,
        draft,
        *,
        drop_rate,
        mass,
        selector,
        tree,
        draft_positions,
        min_draft_confidence=0.0,
        seed=0,
        children="top_k",
    ):
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
        if children not in CHILDREN:
            raise ValueError(f"children must be one of {', '.join(CHILDREN)}, got {children!r}")
        self.children = children
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
        """Vocabularies may differ by padding rows only (Qwen2.5-VL-3B has 151,936 rows,
        7B/32B/72B 152,064; LLaVA-OneVision checkpoints pad to different multiples): the draft
        proposes ids it has, verification runs over the target's whole vocabulary. Special tokens
        must be the same ids, inside both vocabularies."""
        fam = self.family
        vocab = {
            role: fam.lm_head(model).weight.shape[0]
            for role, model in (("target", self.target), ("draft", self.draft))
        }
        shared = min(vocab.values())
        special = {
            "video_token_id": (fam.video_token_id(self.target), fam.video_token_id(self.draft))
        }
        t_gen, d_gen = self.target.generation_config, self.draft.generation_config
        for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
            t_val, d_val = getattr(t_gen, name, None), getattr(d_gen, name, None)
            if t_val is not None and d_val is not None:
                special[name] = (_as_set(t_val), _as_set(d_val))
        for name, (t_val, d_val) in special.items():
            if t_val != d_val:
                raise ValueError(
                    f"target and draft have different {name} ({t_val} vs {d_val}); the draft "
                    "must share the target's tokenizer"
                )
            ids = t_val if isinstance(t_val, set) else {t_val}
            if any(i >= shared for i in ids):
                raise ValueError(
                    f"{name} {sorted(ids)} is outside the smaller vocabulary (target "
                    f"{vocab['target']}, draft {vocab['draft']} rows): the vocabularies differ by "
                    "more than padding; the draft must share the target's tokenizer"
                )

    def _check_tree_ranks(self) -> None:
        vocab = min(self.family.lm_head(m).weight.shape[0] for m in (self.target, self.draft))
        if self.tree.max_rank() >= vocab:
            raise ValueError(
                f"the tree uses the draft's rank-{self.tree.max_rank()} token, but the shared "
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

    # ---------------------------------------------------------------------------------------
    # generate
    # ---------------------------------------------------------------------------------------
    def generate(self, input_ids=None, generation_config=None, **kwargs):
        """``target.generate(input_ids, generation_config, **kwargs)``, speculatively.

        Takes what ``target.generate`` takes (the processor's outputs, generation options,
        ``logits_processor`` / ``stopping_criteria`` / ``prefix_allowed_tokens_fn``,
        ``streamer``, ...; and ``generator=``, a ``torch.Generator`` for sampling) and returns
        the ``[1, L + new]`` token ids. Greedy: exactly ``target.generate``'s tokens. Sampling:
        sequences distributed exactly as ``target.generate``'s. What it cannot honour exactly is
        refused before any work (:mod:`specvlm.generation`).
        """
        setup = generation.resolve(self.target, input_ids, generation_config, kwargs)
        run = Run(
            self.settings,
            self.target,
            self.draft,
            dict(setup.model_inputs, input_ids=setup.input_ids),
            TokenChooser(setup, self.children),
            GeneratedSequence(setup),
            setup.streamer,
            cuda_devices(self.target, self.draft),
        )
        self.last_stats = self._run(run)
        return run.sequence.ids().clone()

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
