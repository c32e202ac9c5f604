"""``specvlm.accelerate((target, draft))``: the object users hold.

:func:`accelerate` validates the pair and the settings once; :meth:`SpeculativeDecoder.generate`
resolves the generation options (refusing what it cannot honour before any work), lets the
automatic policy (:mod:`specvlm.policy`) choose the call's settings unless they were fixed, runs
the loop of :mod:`specvlm.speculation` with both models' attention routed through
:mod:`specvlm.attention`, restores the models, and returns the sequence.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from specvlm import generation, selectors
from specvlm.attention import routed_attention
from specvlm.capture.call import CallRunners, PairCapture
from specvlm.capture.runner import CaptureFailed
from specvlm.choice import CHILDREN, TokenChooser
from specvlm.devices import cuda_devices, synchronized_now
from specvlm.draft_worker import DraftWorkers
from specvlm.dynamic_tree import DynamicTree
from specvlm.families import Family, family_of
from specvlm.generation import GeneratedSequence, GenerationSetup
from specvlm.lookahead_gate import AlwaysLookAhead, LookaheadGate
from specvlm.overlap import check_overlap, overlapping
from specvlm.policy import TREE_SIZES, AutoPolicy, Choice
from specvlm.speculation import Run, Settings, generate_tokens
from specvlm.stats import GenerationStats
from specvlm.trees import Tree, default_tree

__all__ = ["GenerationStats", "SpeculativeDecoder", "accelerate"]

DEFAULT_DROP_RATE = 0.9  # with fixed settings (the policy off) and no drop_rate given
DEFAULT_SELECTOR = "two_stage"


def accelerate(
    models: Sequence[nn.Module],
    *,
    policy="auto",
    drop_rate: float | None = None,
    tree=None,
    speculate: bool | None = None,
    mass: float = 0.4,
    selector=None,
    draft_positions: str | None = None,
    min_draft_confidence: float = 0.0,
    seed: int = 0,
    children: str = "top_k",
    capture="auto",
    overlap="auto",
) -> SpeculativeDecoder:
    """Wrap ``(target, draft)`` for lossless speculative decoding with verifier-guided pruning.

    Args:
        models: ``(target, draft)``: two stock transformers models of one supported family
            (LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL) with the same vocabulary.
        policy: ``"auto"`` (default): each call, :mod:`specvlm.policy` chooses the drop rate
            (0 included), the tree and whether to speculate at all, from forward costs
            measured on this hardware (once per pair, device, dtype and context length) and
            the acceptance seen so far; ``None``: the fixed settings below; or an
            :class:`~specvlm.policy.AutoPolicy` (shared between decoders, or pinning some
            settings while it chooses the others; then ``drop_rate``, ``tree`` and
            ``speculate`` are refused). Giving ``drop_rate``, ``tree`` or ``speculate=True``
            fixes the settings: those given, the defaults (drop rate 0.9, the default tree) for
            the rest. The choice never changes the output; ``last_stats`` reports it.
        drop_rate: share of the video tokens the draft does not see, in ``[0, 1)``; fixed
            settings default to 0.9.
        tree: a :class:`~specvlm.trees.Tree` or a list of top-k rank paths (fixed settings'
            default: 48 nodes, depth 6); ``"dynamic"`` or a :class:`~specvlm.dynamic_tree.
            DynamicTree`: each step's tree shaped by the draft's confidence (EAGLE-2 style).
        speculate: ``False``: the target decodes alone (plain decoding, no draft forward);
            ``True``: always speculate (fixed settings); ``None``: the policy decides. Anything
            else (``"no"``, ``0``) is refused.
        mass: Stage I share of the total attention mass (``two_stage`` selector), in ``[0, 1]``.
        selector: ``"two_stage"`` (``None``: the default, or the policy's choice where an
            ``AutoPolicy(selectors=...)`` chooses it), ``"attention"``, ``"uniform"``,
            ``"random"``, ``"similarity"``, ``"semantic"`` or a callable
            ``(scores [Nv], keep, grid) -> indices``.
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
        capture: captured steps (:mod:`specvlm.capture`: static caches and a compiled
            forward per width bucket; CUDA graphs on a GPU). ``True``: the draft's steps and
            the target's verification captured, a clear error where a model cannot be;
            ``False``: eager transformers code; ``"auto"`` (default): the draft captured where
            it pays (a GPU; not a CPU, where compiling costs more than a call saves), the
            target eager (:mod:`specvlm.capture.decision`). Never changes the output;
            ``last_stats.captured`` / ``capture_reason`` say what a call ran.
        overlap: overlapped drafting (:mod:`specvlm.overlap`): the draft's vision tower runs
            while the target prefills, and the draft drafts the next step's tree on a worker
            of its own (a thread; on a GPU of its own, a stream) while the target verifies the
            current one. ``True``: always; ``False``: the sequential loop; ``"auto"``
            (default): where the draft has a GPU the target does not use, betting only where
            bets paid so far. Greedy output is the target's as always; sampled output has the
            target's distribution (a seeded call repeats, with tokens other than
            ``overlap=False``'s); ``last_stats.overlapped`` / ``lookahead_used`` /
            ``overlap_hidden`` say what a call did.
    """
    options = dict(locals())  # every keyword argument, passed on as given
    models = options.pop("models")
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or len(models) != 2:
        raise TypeError("accelerate expects a pair (target, draft) of models")
    return SpeculativeDecoder(models[0], models[1], **options)


def _check_rate(name: str, value, low: float, high: float, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
    return value


def _as_tree(tree) -> Tree | DynamicTree:
    if isinstance(tree, (Tree, DynamicTree)):
        return tree
    if tree == "dynamic":
        return DynamicTree()
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
        policy="auto",
        speculate=None,
        capture="auto",
        overlap="auto",
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
        self._check_vision_geometry()
        if speculate is not None and not isinstance(speculate, bool):
            raise TypeError(f"speculate must be True, False or None, got {speculate!r}")
        self.policy = self._resolve_policy(policy, drop_rate, tree, speculate)
        self.speculate = speculate
        if speculate is False:
            if drop_rate is not None or tree is not None:
                raise ValueError("speculate=False decodes without the draft: no drop_rate or tree")
        elif self.policy is None:  # fixed settings: the values given, or the defaults
            drop_rate = DEFAULT_DROP_RATE if drop_rate is None else drop_rate
            tree = default_tree() if tree is None else tree
        self.drop_rate = (
            None
            if drop_rate is None
            else _check_rate("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        )
        self.mass = _check_rate("mass", mass, 0.0, 1.0, high_open=False)
        self.min_draft_confidence = _check_rate(
            "min_draft_confidence", min_draft_confidence, 0.0, 1.0, high_open=False
        )
        given, selector = selector is not None, DEFAULT_SELECTOR if selector is None else selector
        self.selector = selectors.resolve(selector, mass=self.mass, seed=seed)
        self.selector_name = selector if isinstance(selector, str) else "callable"
        self._check_selector_choice(given)
        self.seed = seed
        self.tree = None if tree is None else _as_tree(tree)
        self.draft_positions = self._check_draft_positions(draft_positions)
        if children not in CHILDREN:
            raise ValueError(f"children must be one of {', '.join(CHILDREN)}, got {children!r}")
        self.children = children
        for role, model in (("target", target), ("draft", draft)):
            self._check_attention(role, model)
        self._check_tree_ranks()
        capture, overlap = self._dynamic_tree_limits(capture, check_overlap(overlap))
        self.capture = capture
        self.overlap = overlap
        # overlap="auto": look ahead where it paid over this decoder's calls (True: always)
        auto = self.overlap == "auto"
        self._lookahead_gate = LookaheadGate() if auto else AlwaysLookAhead()
        self._draft_workers = DraftWorkers()  # overlap: each calling thread's draft thread
        self._capture = PairCapture(self.family, target, draft, capture, speculate)
        self.settings = Settings(
            self.family,
            self.drop_rate or 0.0,
            self.selector,
            self.tree,
            self.draft_positions,
            self.min_draft_confidence,
            speculate=speculate is not False,
            score_video=speculate is not False,
            selector_name=self.selector_name,
        )
        self._stats = _LastStats()

    def _check_selector_choice(self, given: bool) -> None:
        """A selector given beside a policy that chooses the selector is refused."""
        if self.policy is not None and self.policy.selectors and given:
            raise ValueError(
                f"selector={self.selector_name!r} with an AutoPolicy that chooses the selector "
                f"(selectors={list(self.policy.selectors)}): leave one of them out"
            )

    def _dynamic_tree_limits(self, capture, overlap):
        """A dynamic tree is drafted in sequence, with the draft's top-k children and no
        confidence cut: ``overlap`` as it applies to it (``"auto"``: off), the rest refused in
        one line (``capture`` applies as to a static tree: its steps run in width buckets). A
        policy that may choose dynamic trees: the same refusals; ``"auto"`` applies per call (a
        dynamic call is not overlapped)."""
        if self.policy is not None and self.policy.dynamic_budgets:
            self._refuse_for_dynamic_trees(overlap, "AutoPolicy(dynamic_budgets=...)")
            return capture, overlap
        if not isinstance(self.tree, DynamicTree):
            return capture, overlap
        self._refuse_for_dynamic_trees(overlap, 'tree="dynamic"')
        return capture, False

    def _refuse_for_dynamic_trees(self, overlap, what_asked: str) -> None:
        refused = [
            ("overlap=True", overlap is True),
            ('children="sampled"', self.children == "sampled"),
            ("min_draft_confidence > 0", self.min_draft_confidence > 0),
        ]
        for what, given in refused:
            if given:
                raise ValueError(
                    f"{what_asked}: a dynamic tree is drafted in sequence, from the draft's "
                    f"top-k children: {what} is not supported with it"
                )

    def _check_draft_positions(self, draft_positions: str | None) -> str:
        if draft_positions is None:
            return "original"
        if draft_positions not in ("compact", "original"):
            raise ValueError(
                f"draft_positions must be 'compact' or 'original', got {draft_positions!r}"
            )
        if self.family.mrope and draft_positions == "compact":
            raise ValueError(
                f"{self.family.display_name} uses M-RoPE: the draft keeps the original 3-D "
                "positions (draft_positions='original')"
            )
        return draft_positions

    @staticmethod
    def _resolve_policy(policy, drop_rate, tree, speculate) -> AutoPolicy | None:
        """The automatic policy, or None where the settings are fixed."""
        if not (policy is None or policy == "auto" or isinstance(policy, AutoPolicy)):
            raise ValueError(f"policy must be 'auto', None or an AutoPolicy, got {policy!r}")
        fixed = drop_rate is not None or tree is not None or speculate is not None
        if fixed and isinstance(policy, AutoPolicy):
            raise ValueError(
                "an AutoPolicy with drop_rate, tree or speculate given too: pin them in the "
                "policy to have it choose the rest (AutoPolicy(drop_rates=(0.9,), tree=..., "
                "speculate=True)), or leave the policy out for fixed settings"
            )
        if policy is None or fixed:
            return None
        return policy if isinstance(policy, AutoPolicy) else AutoPolicy()

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

    def _shared_vocab(self) -> int:
        return min(self.family.lm_head(m).weight.shape[0] for m in (self.target, self.draft))

    def _check_tree_ranks(self) -> None:
        vocab = self._shared_vocab()
        pinned = None if self.policy is None else self.policy.tree
        for tree in (self.tree, pinned):
            if tree is not None and tree.max_rank() >= vocab:
                raise ValueError(
                    f"the tree uses the draft's rank-{tree.max_rank()} token, but the shared "
                    f"vocabulary has only {vocab} tokens"
                )

    def _check_vision_geometry(self) -> None:
        """The draft must cut a video into the same tokens as the target (pixel patches, merge,
        frames per token): it is fed the target's processor outputs and its placeholders."""
        fam = self.family
        target, draft = fam.vision_geometry(self.target), fam.vision_geometry(self.draft)
        differ = [f"{k} {target[k]} vs {draft[k]}" for k in target if target[k] != draft.get(k)]
        if differ:
            raise ValueError(
                "target and draft cut videos into different tokens (" + ", ".join(differ) + "); "
                "the draft must share the target's vision geometry and processor"
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
        run = self._run(setup)
        self._stats.record(run.stats)
        return run.sequence.ids().clone()

    def release_captures(self) -> None:
        """Free the captured steps' static caches and graphs now (the next captured call
        builds them again); otherwise they are kept for later calls and go with this
        object."""
        self._capture.release()

    @property
    def last_stats(self) -> GenerationStats | None:
        """The :class:`GenerationStats` of this thread's last finished ``generate`` call; in a
        thread that made none, of the last call any thread finished (None before any)."""
        return self._stats.get()

    def _run(self, setup: GenerationSetup) -> Run:
        """Choose the settings (the policy) and run the loop with both models' attention routed
        (put back as it was afterwards, also on error)."""
        inputs = dict(setup.model_inputs, input_ids=setup.input_ids)
        devices = cuda_devices(self.target, self.draft)
        for dev in devices:
            torch.cuda.reset_peak_memory_stats(dev)
        t_start = synchronized_now(devices)
        with (
            torch.no_grad(),
            routed_attention(self.family.decoder(self.target)),
            routed_attention(self.family.decoder(self.draft)),
            self._call_capture(setup) as captured,
        ):
            choice, calibration = self._choose_captured(setup, inputs, captured)
            run = Run(
                self._settings_for(choice),
                self.target,
                self.draft,
                inputs,
                TokenChooser(setup, self.children),
                GeneratedSequence(setup),
                setup.streamer,
                devices,
            )
            if choice is not None and choice.speculate:
                run.keep_speculating = lambda stats: self.policy.keep_speculating(choice, stats)
            self._capture.attach(captured, run)
            with overlapping(run, self.overlap, self._lookahead_gate, self._draft_workers):
                generate_tokens(run)
            self._capture.report(captured, run)
        if run.streamer is not None:
            run.streamer.end()
        stats = run.stats
        stats.total = synchronized_now(devices) - t_start
        for dev in devices:
            stats.peak_memory_bytes[str(dev)] = torch.cuda.max_memory_allocated(dev)
        stats.new_tokens = len(run.emitted)
        self._report(stats, run.settings, choice, calibration)
        stats.finish()
        if choice is not None:
            self.policy.observe(choice, stats)
        return run

    def _call_capture(self, setup: GenerationSetup):
        """The captured steps' runners this call holds (:mod:`specvlm.capture`), sized for the
        prompt, every new token and the largest tree the call may verify (the fixed one, or
        the policy's largest); the policy's calibration measures the models on them."""
        if self.policy is None:
            trees = [self.tree] if self.tree else []
            nodes = max(TREE_SIZES) if not trees else 0
        else:  # the policy's largest tree, the one it has pinned, its dynamic ones
            trees = [self.policy.tree] if self.policy.tree is not None else []
            trees += list(self.policy.dynamic_trees)
            nodes = max(TREE_SIZES)
        for tree in trees:  # a dynamic tree's step also feeds the draft candidates it drops
            nodes = max(nodes, tree.size, tree.most_fed if isinstance(tree, DynamicTree) else 0)
        speculate = self.speculate is not False
        return self._capture.call(setup.prompt_length, setup.max_new_tokens, nodes, speculate)

    def _choose_captured(self, setup: GenerationSetup, inputs: dict, captured: CallRunners):
        """:meth:`_choose` on the call's runners; where calibrating on one fails to compile
        under ``capture="auto"``, that model goes eager and the choice is made again."""
        while True:
            try:
                return self._choose(setup, inputs, **captured.runners)
            except CaptureFailed as error:
                if self.capture is True:
                    raise
                self._capture.failed(captured, error)

    def _choose(
        self, setup: GenerationSetup, inputs: dict, draft=None, target=None
    ) -> tuple[Choice | None, float]:
        """The policy's choice for this call (None with fixed settings), and the seconds spent
        measuring forward costs for it."""
        if self.policy is None:
            return None, 0.0
        layout = self.family.video_layout(self.target, setup.input_ids, inputs)
        return self.policy.choose(
            self.family,
            self.target,
            self.draft,
            prompt_len=setup.prompt_length,
            video_tokens=0 if layout is None else layout.num_tokens,
            max_new_tokens=setup.max_new_tokens,
            max_rank=self._shared_vocab() - 1,
            draft_runner=draft,
            target_runner=target,
        )

    def _settings_for(self, choice: Choice | None) -> Settings:
        if choice is None:
            return self.settings
        chosen = {}
        if choice.selector is not None:
            chosen["selector"] = selectors.resolve(choice.selector, mass=self.mass, seed=self.seed)
            chosen["selector_name"] = choice.selector
        return replace(
            self.settings,
            drop_rate=choice.drop_rate,
            tree=choice.tree,
            speculate=choice.speculate,
            score_video=choice.score_video,
            **chosen,
        )

    def _report(self, stats: GenerationStats, settings: Settings, choice, calibration) -> None:
        """The settings the call ran with, into its stats."""
        stats.policy = "fixed" if choice is None else "auto"
        stats.speculated = settings.speculate
        stats.drop_rate = settings.drop_rate if settings.speculate else 0.0
        stats.tree = settings.tree if settings.speculate else None
        stats.tree_size = stats.tree.size if stats.tree is not None else 0
        stats.tree_depth = stats.tree.depth if stats.tree is not None else 0
        stats.calibration = calibration
        if choice is None:
            stats.reason = "fixed settings" if settings.speculate else "plain decoding requested"
        else:
            stats.predicted_speedup, stats.reason = choice.predicted_speedup, choice.reason


class _LastStats:
    """The stats of the last call, per thread and overall (threads may share a decoder)."""

    def __init__(self):
        self._local = threading.local()
        self._latest: GenerationStats | None = None

    def record(self, stats: GenerationStats) -> None:
        self._local.stats = stats
        self._latest = stats

    def get(self) -> GenerationStats | None:
        mine = getattr(self._local, "stats", None)
        return mine if mine is not None else self._latest


def _as_set(value) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, torch.Tensor):
        return {int(v) for v in value.reshape(-1).tolist()}
    if isinstance(value, (list, tuple, set)):
        return {int(v) for v in value}
    return {int(value)}
