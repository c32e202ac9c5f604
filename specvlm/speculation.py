"""One ``generate`` call of SpecVLM as a short story of named steps (see ``docs/design.md``).

1. :func:`prefill_target`: the target's multimodal wrapper runs unchanged up to its text decoder
   (:func:`~specvlm.decoder.capture_decoder_inputs`); the decoder prefills the prompt with its own
   attention while :mod:`specvlm.attention` adds each layer's text-to-video attention into one
   fp32 buffer (when the video is to be pruned). The last logits give the first new token.
2. :func:`prune`: the selector picks ``keep`` grid tokens (:func:`~specvlm.selectors.keep_count`).
3. :func:`prefill_draft`: the draft prefills the text and the kept video tokens only, with
   positions from :mod:`specvlm.positions` (1-D compacted or original; M-RoPE: original 3-D);
   with captured steps (:mod:`specvlm.capture`) its cache then moves into a static one (the
   target's too, after step 1, where its verification is captured).
4. :func:`speculate`, until generation is finished: **draft** (the draft expands the tree
   level by level, :mod:`specvlm.drafting`) -> **verify** (the target scores every node in one
   forward and the token chooser accepts a path, :mod:`specvlm.verify`) -> **commit** (both
   caches keep only that path) -> **emit** (the path and the bonus token, one at a time, until a
   stopping criterion holds). After each step the run may give up speculating (the automatic
   policy, when the acceptance seen does not pay for drafting). With ``overlap``
   (:mod:`specvlm.overlap`) the same loop drafts the next tree while the target verifies, and
   the draft's vision tower runs during step 1.
5. :func:`decode_plain`: the target alone, one forward per token, as ``target.generate`` does:
   the whole decode when speculation was not chosen (steps 2-4 are skipped), or the rest of it
   after speculation gave up.

All steps share one :class:`Run`, the state of the call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from specvlm import positions, selectors
from specvlm.attention import BasePlan, ScorePlan, attention_plan
from specvlm.choice import TokenChooser
from specvlm.decoder import DecoderInputs, capture_decoder_inputs, decoder_forward, new_cache
from specvlm.devices import synchronized_now
from specvlm.drafting import DraftPlan, Proposal, draft_tree
from specvlm.dynamic_tree import DynamicTree, draft_dynamic
from specvlm.families import Family, VideoLayout
from specvlm.generation import GeneratedSequence
from specvlm.side import Side, ones_mask
from specvlm.stats import GenerationStats
from specvlm.trees import Tree
from specvlm.verify import apply_commit, plan_commit, verify_mask, verify_tree


@dataclass(frozen=True)
class Settings:
    """How :func:`specvlm.accelerate` was configured (validated there)."""

    family: Family
    drop_rate: float
    selector: selectors.Selector
    tree: Tree | DynamicTree
    draft_positions: str  # "original" | "compact"
    min_draft_confidence: float
    speculate: bool = True  # False: the target decodes alone (steps 2-4 skipped)
    selector_name: str = "two_stage"  # the selector's name ("callable" for one of the user's)
    score_video: bool = True  # score the video in the target prefill (pruning needs it)


@dataclass
class Run:
    """The state the steps of one ``generate`` call share."""

    settings: Settings
    target_model: nn.Module
    draft_model: nn.Module
    inputs: dict  # the model inputs, input_ids included (batch 1)
    chooser: TokenChooser
    sequence: GeneratedSequence  # prompt + emitted tokens; says when generation stops
    streamer: object | None
    devices: list[torch.device]  # CUDA devices to synchronise for timings
    stats: GenerationStats = field(default_factory=GenerationStats)
    # asked after every speculative step; False: go on with plain decoding (None: never)
    keep_speculating: Callable[[GenerationStats], bool] | None = None
    # captured steps (specvlm.capture), by role ("draft", "target"): makes the side the loop
    # runs from that model's prefilled side (absent: the eager side itself)
    adopt: dict[str, Callable[[Side], Side]] = field(default_factory=dict)
    # how a step's tree is drafted (draft_tree, or draft_tree_on_device with captured steps)
    drafter: Callable[..., Proposal] = draft_tree
    # step 4's loop: speculate below, or the overlapped one (specvlm.overlap); None: speculate
    speculator: Callable[[Run, int], int | None] | None = None
    # the draft's decoder inputs (its vision tower's work), computed ahead of step 3 by the
    # overlapped schedule while the target prefills; None: step 3 computes them
    draft_inputs: Callable[[], DecoderInputs] | None = None
    draft_encoding: float = 0.0  # seconds of them computed before the draft's prefill
    target: Side | None = None  # set by prefill_target
    draft: Side | None = None  # set by prefill_draft
    layout: VideoLayout | None = None  # where the video tokens are (None: no video)
    video_scores: torch.Tensor | None = None  # fp32 [T*H*W]: the target's attention per token

    @property
    def prompt_len(self) -> int:
        return self.inputs["input_ids"].shape[1]

    @property
    def emitted(self) -> list[int]:
        return self.sequence.new_tokens

    def now(self) -> float:
        return synchronized_now(self.devices)

    def append(self, token: int) -> bool:
        """Add a token to the sequence; True when generation is then finished (the stopping
        criteria, as ``generate`` applies them after each token)."""
        return self.sequence.append(token)

    def stream(self, tokens: list[int]) -> None:
        if self.streamer is not None:
            for token in tokens:
                self.streamer.put(torch.tensor([token]))

    def emit(self, tokens: list[int]) -> bool:
        """Append and stream ``tokens`` until generation is finished; True when it is."""
        for token in tokens:
            finished = self.append(token)
            self.stream([token])
            if finished:
                return True
        return False


def generate_tokens(run: Run) -> None:
    """The whole call: the steps below, in order. New tokens end up in ``run.sequence``."""
    if run.streamer is not None:
        run.streamer.put(run.inputs["input_ids"].cpu())
    root = prefill_target(run)
    finished = run.append(root)
    speculating = run.settings.speculate and not finished
    if speculating:  # nothing to speculate otherwise: no pruning, no draft prefill
        keep = prune(run)
        prefill_draft(run, keep)
    # The first new token is handed out once both models hold the prompt: prompt processing
    # (target prefill and scoring, pruning, draft prefill) is time to first token, and decode
    # time is the speculate / verify loop (docs/design.md, "Timing").
    run.stream([root])
    if speculating:
        root = (run.speculator or speculate)(run, root)
        finished = root is None
    if not finished:
        decode_plain(run, root)
    count_forwards(run)


def prefill_target(run: Run) -> int:
    """Step 1: the target prefills the prompt, scoring the video tokens on the side (when the
    settings say so: pruning needs the scores); returns the first new token."""
    t0 = run.now()
    fam, model, stats = run.settings.family, run.target_model, run.stats
    decoder, head = fam.decoder(model), fam.lm_head(model)
    run.layout = layout = fam.video_layout(model, run.inputs["input_ids"], run.inputs)
    captured = capture_decoder_inputs(model, decoder, _to_device(run.inputs, _device_of(decoder)))
    scoring = layout is not None and run.settings.score_video
    plan = ScorePlan(*layout.span, layout.text_start) if scoring else BasePlan()
    cache = new_cache()
    device = captured.inputs_embeds.device
    with attention_plan(plan):
        logits = decoder_forward(
            decoder,
            head,
            cache,
            captured.inputs_embeds,
            captured.position_ids,
            ones_mask(run.prompt_len, device),
            logits_rows=slice(run.prompt_len - 1, run.prompt_len),
            extra=captured.extra,
        )
    root = run.chooser.first_token(run.sequence, logits[0, -1:])
    prompt_pos = positions.prompt_positions(
        captured.position_ids, run.prompt_len, fam.mrope, device
    )
    run.target = Side(
        decoder,
        head,
        model.get_input_embeddings(),
        cache,
        positions.next_positions(prompt_pos),
        fam.mrope,
        device,
    )
    stats.target_forwards += 1
    stats.target_prefill = run.now() - t0
    run.target = adopted(run, "target", run.target)
    stats.scored_video = scoring
    if layout is not None:
        stats.video_tokens = stats.kept_video_tokens = layout.num_tokens
        stats.video_grid = layout.grid
        stats.kept_indices = torch.arange(layout.num_tokens)
    if scoring:
        stats.scoring = plan.scores.seconds
        run.video_scores = _gather_scores(plan.scores.buffers, layout)
        stats.video_scores = run.video_scores.float().cpu()
    return root


def adopted(run: Run, role: str, side: Side) -> Side:
    """The side the loop runs for ``role`` after its prefill: on captured steps where the call
    has them (the time it takes, compiling included, is ``stats.capture_setup``)."""
    adopt = run.adopt.get(role)
    if adopt is None:
        return side
    t0 = run.now()
    side = adopt(side)
    run.stats.capture_setup += run.now() - t0
    return side


def prune(run: Run) -> torch.Tensor:
    """Step 2: which prompt positions the draft sees (bool ``[L]``): all text, the kept video
    tokens."""
    t0 = run.now()
    settings = run.settings
    features = None
    if selectors.needs_features(settings.selector) and run.layout is not None:
        t1 = run.now()
        embeds = draft_inputs(run).inputs_embeds[0]  # the draft's prefill would compute them
        run.draft_encoding = run.now() - t1  # counted as the draft's prefill, not pruning
        features = video_features(embeds, run.layout)
    keep_seq, kept = kept_positions(
        run.prompt_len,
        run.layout,
        run.video_scores,
        settings.drop_rate,
        settings.selector,
        features,
    )
    if kept is not None:
        run.stats.kept_video_tokens = kept.numel()
        run.stats.kept_indices = kept
        run.stats.selector = settings.selector_name
    run.stats.pruning = run.now() - t0 - run.draft_encoding
    return keep_seq


def draft_inputs(run: Run) -> DecoderInputs:
    """The draft's decoder inputs for the whole prompt, computed once per call (by the overlap
    worker where there is one): the feature selectors read them, the draft's prefill prunes
    them."""
    if run.draft_inputs is None:
        computed = draft_decoder_inputs(run.settings.family, run.draft_model, run.inputs)
        run.draft_inputs = lambda: computed
    return run.draft_inputs()


def video_features(embeds: torch.Tensor, layout: VideoLayout) -> selectors.VideoFeatures:
    """:class:`~specvlm.selectors.VideoFeatures` of one prompt's decoder inputs ``[L, D]``."""
    question = torch.arange(layout.text_start, embeds.shape[0])
    if question.numel() == 0:  # no text after the video: all the text
        is_text = torch.ones(embeds.shape[0], dtype=torch.bool)
        is_text[layout.positions] = False
        is_text[list(layout.extra_positions)] = False
        question = torch.nonzero(is_text).flatten()
    device = embeds.device
    return selectors.VideoFeatures(embeds[layout.positions.to(device)], embeds[question.to(device)])


def kept_positions(
    prompt_len: int,
    layout: VideoLayout | None,
    scores: torch.Tensor | None,
    drop_rate: float,
    selector: selectors.Selector,
    features: selectors.VideoFeatures | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pruning itself: bool ``[prompt_len]`` (True: the draft sees the position) and the
    kept grid indices (None when nothing is pruned). ``scores``: the target's attention per grid
    token (zeros where none was measured: Stage II alone then picks the tokens). Scores that are
    not all finite (a target with NaN or overflowing activations) are not attention: they are
    treated as unmeasured, which changes what the draft sees, never the output. ``features``:
    what a feature selector reads (:func:`video_features`)."""
    keep_seq = torch.ones(prompt_len, dtype=torch.bool)
    if layout is None or drop_rate <= 0:
        return keep_seq, None
    keep = selectors.keep_count(layout.num_tokens, drop_rate)
    if scores is None or not bool(torch.isfinite(scores).all()):
        scores = torch.zeros(layout.num_tokens)
    kept = selectors.run_selector(selector, scores, keep, layout.grid, features)
    keep_seq[layout.positions] = False
    keep_seq[layout.positions[kept]] = True
    return keep_seq, kept


def prefill_draft(run: Run, keep_seq: torch.Tensor) -> None:
    """Step 3: the draft prefills the prompt without the pruned video tokens."""
    t0 = run.now()
    run.draft = draft_prefill(
        run.settings.family,
        run.draft_model,
        run.inputs,
        keep_seq,
        run.settings.draft_positions,
        target_vocab=run.target.lm_head.weight.shape[0],
        captured=draft_inputs(run),
    )
    run.draft_inputs = None  # the prefill was their last reader (a long video's embeddings)
    run.stats.draft_forwards += 1
    # computed ahead for a feature selector, they are still the draft's prefill
    run.stats.draft_prefill = run.now() - t0 + run.draft_encoding
    run.draft = adopted(run, "draft", run.draft)


def draft_prefill(
    family: Family,
    model: nn.Module,
    inputs: dict,
    keep_seq: torch.Tensor,
    draft_positions: str,
    target_vocab: int,
    prompt_position_ids: torch.Tensor | None = None,
    captured: DecoderInputs | None = None,
) -> Side:
    """The draft's prefill of the prompt ``inputs`` (batch 1) without the positions
    ``keep_seq`` drops; returns its :class:`Side`, proposing in a vocabulary of
    ``target_vocab`` rows. ``prompt_position_ids``: the prompt's positions as the target runs
    them (``[R, 1, L]`` or ``[1, L]``), where the serving engine computes its own; default: the
    draft model's own (transformers'). ``captured``: :func:`draft_decoder_inputs`, where they
    were computed ahead (default: computed here)."""
    prompt_len = inputs["input_ids"].shape[1]
    decoder, head = family.decoder(model), family.lm_head(model)
    if captured is None:
        captured = draft_decoder_inputs(family, model, inputs)
    if captured.inputs_embeds.shape[1] != prompt_len:
        raise ValueError(
            "target and draft expand the prompt to different lengths "
            f"({prompt_len} vs {captured.inputs_embeds.shape[1]}); their video token layouts "
            "must match"
        )
    device = captured.inputs_embeds.device
    embeds = captured.inputs_embeds[:, keep_seq.to(device)]
    given = captured.position_ids if prompt_position_ids is None else prompt_position_ids.to(device)
    full = positions.prompt_positions(given, prompt_len, family.mrope, device)
    pos = positions.draft_positions(full, keep_seq, draft_positions)
    cache = new_cache()
    with attention_plan(BasePlan()):
        decoder_forward(
            decoder,
            head,
            cache,
            embeds,
            pos,
            ones_mask(embeds.shape[1], device),
            extra=family.prune_extra(captured.extra, keep_seq),
        )
    draft_vocab = head.weight.shape[0]
    padded = target_vocab != draft_vocab  # the draft proposes in the target's vocabulary
    return Side(
        decoder,
        head,
        model.get_input_embeddings(),
        cache,
        positions.next_positions(pos),
        family.mrope,
        device,
        logits_width=target_vocab if padded else None,
        known_ids=draft_vocab if padded else None,
    )


def draft_decoder_inputs(family: Family, model: nn.Module, inputs: dict) -> DecoderInputs:
    """The draft's multimodal wrapper run up to its text decoder on the whole prompt (its
    vision tower and projector included): what :func:`draft_prefill` prunes and prefills. It
    does not depend on the target's scores."""
    decoder = family.decoder(model)
    return capture_decoder_inputs(model, decoder, _to_device(inputs, _device_of(decoder)))


def speculate(run: Run, root: int) -> int | None:
    """Step 4: draft -> verify -> commit -> emit, until generation is finished (returns None) or
    the run gives up speculating (returns the last emitted token, which the target has not
    processed yet)."""
    t0 = run.now()
    settings, stats = run.settings, run.stats
    dynamic = isinstance(settings.tree, DynamicTree)
    if dynamic:  # shaped per step: the tree's own limits are the plan, its mask per proposal
        plan, full_mask, run.drafter = settings.tree, None, draft_dynamic
    else:
        plan, full_mask = DraftPlan.of(settings.tree), verify_mask(settings.tree)
    pending = [root]  # tokens the draft has not processed yet; the last one is the root
    while True:
        proposal = draft_step(run, plan, pending, run.chooser.children(run.sequence))
        target_base = run.target.length
        mask = verify_mask(proposal.tree) if dynamic else full_mask
        verdict = verify_tree(
            run.target, proposal, mask, pending[-1], run.chooser.decide(run.sequence)
        )
        commit = plan_commit(proposal, verdict)
        apply_commit(run.target, target_base, run.draft, proposal, commit)
        pending = commit.pending
        if emit_step(run, proposal, verdict):
            stats.decode += run.now() - t0
            return None
        if gives_up(run):
            stats.decode += run.now() - t0
            return pending[-1]


def draft_step(run: Run, plan: DraftPlan, pending: list[int], pick) -> Proposal:
    """The draft feeds ``pending`` (the last one the root) and drafts the plan's tree with the
    call's drafter, stop tokens and confidence cut; ``pick``: the children picker (None: the
    draft's top-k)."""
    return run.drafter(
        run.draft,
        plan,
        pending,
        run.chooser.stop_tokens,
        run.settings.min_draft_confidence,
        pick,
    )


def emit_step(run: Run, proposal: Proposal, verdict) -> bool:
    """Record a verified step in the stats and emit its tokens; True when generation is then
    finished."""
    stats = run.stats
    stats.accepted_lengths.append(len(verdict.accepted) + 1)
    stats.drafted_depths.append(proposal.tree.depth)
    stats.record_step(proposal.tree, verdict.accepted)
    return run.emit(verdict.tokens(proposal))


def gives_up(run: Run) -> bool:
    """Whether the run stops speculating after this step (the automatic policy, when the
    acceptance seen does not pay for drafting); records the step where it did."""
    if run.keep_speculating is None or run.keep_speculating(run.stats):
        return False
    run.stats.fallback_step = len(run.stats.accepted_lengths)
    return True


def decode_plain(run: Run, last: int) -> None:
    """Step 5: the target alone feeds the last emitted token and chooses the next one, one
    forward per token, until generation is finished (what ``target.generate`` does, with the
    same token chooser and stopping criteria)."""
    t0 = run.now()
    target, stats = run.target, run.stats
    while True:
        logits = target.step(
            [last],
            _ZERO,
            BasePlan(),
            ones_mask(target.length + 1, target.device),
            slice(0, 1),
        )
        target.next_pos = target.next_pos + 1
        last = run.chooser.first_token(run.sequence, logits[0])  # the sequence's next token
        stats.plain_tokens += 1
        if run.emit([last]):
            break
    elapsed = run.now() - t0
    stats.plain_decode += elapsed
    stats.decode += elapsed


def count_forwards(run: Run) -> None:
    """The forwards each side ran after its prefill (verifications, drafting, plain steps)."""
    run.stats.target_forwards += run.target.forwards
    if run.draft is not None:
        run.stats.draft_forwards += run.draft.forwards


# -------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------
_ZERO = torch.zeros(1, dtype=torch.long)  # the offset of a single fed token


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
