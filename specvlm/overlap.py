"""Overlapped drafting: the draft works while the target does (``accelerate(overlap=...)``).

The sequential loop (:func:`specvlm.speculation.speculate`) adds the draft's time and the
target's: draft a tree, then verify it, then draft the next one. Here the draft runs on a
worker of its own (:mod:`specvlm.draft_worker`: a thread per calling thread; on a GPU of the
draft's own, also a stream) and two things overlap:

- **Prefill.** The draft's multimodal wrapper (its vision tower and projector on the whole
  video) does not depend on the target's scores: it runs while the target prefills. Only the
  draft's decoder prefill of the kept tokens waits for the pruning.
- **Decode: look-ahead.** While the target verifies step ``t``'s tree, the draft guesses the
  step's outcome and drafts step ``t + 1``'s tree from there. The guess: the tree's first path
  to its deepest level (its rank-0 chain where the tree has one) accepted whole, and the
  target's bonus token being the draft's own top-1 after it. When the verdict is exactly that
  (same path, same bonus), the next tree is ready the moment verification ends; otherwise the
  draft's cache rolls back to the longest part of the guess the target accepted and the draft
  drafts as the sequential loop would.

Timeline of one step (``docs/design.md``, "Overlapped drafting")::

    main (target)   | verify tree t ......... | commit, emit | verify tree t+1 ...
    worker (draft)  | feed leaf, draft t+1 .. |              | feed leaf, draft t+2 ...
                                              ^ join: hit -> tree t+1 is ready
                                                      miss -> roll back, draft t+1 now

Lossless by construction: the target verifies every tree exactly as in the sequential loop,
and a looked-ahead tree is used only when its prefix is exactly the emitted one, so it is the
tree the draft proposes after that prefix (greedy), or a draw from the draft's distribution
after it, made with a seed of the tree's own and independent of the target's acceptance
(sampling: :class:`TreeChildren`). Tests: ``tests/test_overlap.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from specvlm.draft_worker import DraftWorker, DraftWorkers
from specvlm.drafting import EMPTY, DraftPlan, Proposal, feed_pending
from specvlm.dynamic_tree import DynamicTree
from specvlm.lookahead_gate import LookaheadGate
from specvlm.speculation import (
    Run,
    draft_decoder_inputs,
    draft_step,
    emit_step,
    gives_up,
)
from specvlm.verify import commit_draft, commit_target, plan_commit, verify_mask, verify_tree


# -------------------------------------------------------------------------------------------
# Whether a call overlaps
# -------------------------------------------------------------------------------------------
def check_overlap(value) -> object:
    """``accelerate(overlap=)``, validated: ``"auto"``, ``True`` or ``False``."""
    if not (value is True or value is False or value == "auto"):
        raise ValueError(f"overlap must be 'auto', True or False, got {value!r}")
    return value


def decide_overlap(setting, target: nn.Module, draft: nn.Module) -> tuple[bool, str]:
    """Whether the call overlaps, and why (one line). ``"auto"`` overlaps where the draft has a
    device the target does not use (a draft on its own GPU): there its forwards cost the
    target nothing. On a CPU, or a GPU both models share, the two compete for the same cores;
    ``docs/performance.md`` ("Overlapped drafting") has what that measured, and ``True``
    overlaps there anyway."""
    if setting is False:
        return False, "overlap=False"
    if setting is True:
        return True, "overlap=True"
    if target is draft:
        return False, "auto: the draft is the target"
    target_devices = {p.device for p in target.parameters()}
    draft_devices = {p.device for p in draft.parameters()}
    if any(d.type != "cuda" for d in target_devices | draft_devices):
        return False, "auto: a model is on the CPU, where both models share the cores"
    if draft_devices & target_devices:
        return False, "auto: the draft shares a GPU with the target"
    return True, "auto: the draft has a GPU of its own"


# -------------------------------------------------------------------------------------------
# The worker
# -------------------------------------------------------------------------------------------
@contextmanager
def overlapping(run: Run, setting, gate: LookaheadGate, workers: DraftWorkers):
    """The block runs ``run`` overlapped where :func:`decide_overlap` says so for ``setting``
    (and the run speculates), on this thread's draft worker from ``workers``, its look-aheads
    where ``gate`` says they pay. Every job of the call has finished on the way out, also on
    error."""
    on, reason = decide_overlap(setting, run.target_model, run.draft_model)
    if on and isinstance(run.settings.tree, DynamicTree):  # the policy's choice for this call
        on, reason = False, "a dynamic tree is drafted in sequence"
    run.stats.overlap_reason = reason if run.settings.speculate else "no speculation"
    if not (on and run.settings.speculate):
        yield
        return
    device = next(run.settings.family.decoder(run.draft_model).parameters()).device
    target_devices = {p.device for p in run.target_model.parameters()}
    with workers.for_draft(device, own_stream=device not in target_devices) as worker:
        attach(run, worker, gate)
        yield


def attach(run: Run, worker: DraftWorker, gate: LookaheadGate) -> None:
    """Make ``run`` overlapped: the draft's decoder inputs start now, on the worker (they run
    while the target prefills); the captured steps' adoption runs there too, and step 4 is
    :func:`speculate_overlapped`."""
    settings = run.settings
    job = worker.submit(draft_decoder_inputs, settings.family, run.draft_model, run.inputs)
    run.draft_inputs = lambda: worker.result(job)
    adopt = run.adopt.get("draft")
    if adopt is not None:  # graphs are recorded by the thread that will replay them
        run.adopt["draft"] = lambda side: worker.call(adopt, side)
    run.speculator = lambda run, root: speculate_overlapped(run, root, worker, gate)


# -------------------------------------------------------------------------------------------
# Look-ahead
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Guess:
    """The step outcome the draft bets on: ``nodes``, a path from the root to a node of the
    deepest level, all accepted (``tokens``: theirs); ``fed``: how many of them the draft was
    fed while drafting (all but the last)."""

    nodes: list[int]
    tokens: list[int]

    @property
    def fed(self) -> int:
        return len(self.nodes) - 1


@dataclass(frozen=True)
class Ahead:
    """What the worker drafted on a guess: the bonus token it bet on and the next proposal."""

    guess: Guess
    bonus: int
    proposal: Proposal
    seconds: float  # the worker's time on it

    def hit(self, accepted: list[int], bonus: int) -> bool:
        return accepted == self.guess.nodes and bonus == self.bonus


def guess_of(proposal: Proposal, stop_tokens: frozenset[int], room: int) -> Guess | None:
    """The path the look-ahead bets on: the first node of the deepest level (nodes are ordered by
    rank path, so the rank-0 chain where the tree has it) and its ancestors. None where a
    look-ahead cannot pay: a token of the path ends generation (a stop token), is an empty
    slot, or the path and a bonus would not fit in the ``room`` of new tokens left."""
    tree = proposal.tree
    node = tree.nodes_at_depth(tree.depth)[0]
    nodes = []
    while node >= 0:
        nodes.append(node)
        node = tree.parents[node]
    nodes.reverse()
    tokens = [proposal.tokens[i] for i in nodes]
    if len(tokens) + 1 >= room or any(t == EMPTY or t in stop_tokens for t in tokens):
        return None
    return Guess(nodes, tokens)


def look_ahead(run: Run, plan: DraftPlan, proposal: Proposal, guess: Guess, pick_after) -> Ahead:
    """On the worker: commit the draft to ``guess`` (its cache keeps the guessed path), feed the
    path's last node, take the draft's top-1 as the bonus, and draft the next tree from it.
    ``pick_after(tokens)``: the children picker for a sequence extended by ``tokens``."""
    t0, draft = time.perf_counter(), run.draft
    draft.keep(proposal.prefix_len, guess.nodes[: guess.fed])  # fed nodes sit at their index
    draft.next_pos = proposal.root_pos + 1 + guess.fed
    logits, _, _ = feed_pending(draft, guess.tokens[-1:])
    bonus = int(logits[0, -1].argmax())
    draft.next_pos = draft.next_pos + 1
    following = draft_step(run, plan, [bonus], pick_after([*guess.tokens, bonus]))
    return Ahead(guess, bonus, following, time.perf_counter() - t0)


def resume_pending(run: Run, proposal: Proposal, verdict, ahead: Ahead | None) -> list[int]:
    """After a step whose look-ahead missed (or did not run): the draft's cache keeps what it
    holds of the accepted path and the tokens it must still be fed are returned (the last one
    being the next root). Without a look-ahead this is the sequential loop's commit; after one,
    the cache holds the guessed path in order, so it keeps the part the target accepted."""
    draft = run.draft
    if ahead is None:
        commit = plan_commit(proposal, verdict)
        commit_draft(draft, proposal, commit)
        return commit.pending
    shared = 0
    for guessed, accepted in zip(ahead.guess.nodes, verdict.accepted, strict=False):
        if guessed != accepted:
            break
        shared += 1
    draft.keep(proposal.prefix_len, list(range(shared)))
    draft.next_pos = proposal.root_pos + 1 + shared
    return [proposal.tokens[a] for a in verdict.accepted[shared:]] + [verdict.bonus]


# -------------------------------------------------------------------------------------------
# The overlapped loop (step 4)
# -------------------------------------------------------------------------------------------
def speculate_overlapped(
    run: Run, root: int, worker: DraftWorker, gate: LookaheadGate
) -> int | None:
    """Step 4 with look-ahead: the same draft -> verify -> commit -> emit as
    :func:`~specvlm.speculation.speculate` (same return), the next tree drafted on the worker
    while the target verifies, where ``gate`` says it pays. Its stats: ``lookahead_*`` and
    ``overlap_*``."""
    t0 = run.now()
    run.stats.overlapped = True
    step = _Stepper(run, worker, gate)
    proposal = step.draft([root])
    try:
        while True:
            verdict, ahead = step.verify(proposal, root)
            if emit_step(run, proposal, verdict):
                return None
            if gives_up(run):
                return verdict.bonus
            if ahead is not None:
                proposal, root = ahead.proposal, ahead.bonus
            else:
                proposal, root = step.draft_after_miss()
    finally:
        run.stats.decode += run.now() - t0
        run.stats.overlap_reason += f"; {gate.describe()}"


class _Stepper:
    """The overlapped loop's moves for one call, all of the draft's work on the worker:
    drafting a tree (first, and after a miss), and verifying with the next tree drafted ahead
    on a bet."""

    def __init__(self, run: Run, worker: DraftWorker, gate: LookaheadGate):
        self.run, self.worker, self.gate = run, worker, gate
        self.plan = DraftPlan.of(run.settings.tree)
        self.full_mask = verify_mask(run.settings.tree)
        self.children = TreeChildren(run)
        self.seed = self.children.next_seed()  # the next tree's children's seed
        self.missed: tuple | None = None  # the last step's (proposal, verdict, look-ahead)

    def draft(self, pending: list[int]) -> Proposal:
        """The first tree, drafted on the worker as the sequential loop drafts."""
        pick = self.children.after(self.seed)([])
        return self._timed(draft_step, self.run, self.plan, pending, pick)

    def draft_after_miss(self) -> tuple[Proposal, int]:
        """After a step whose bet missed (or that made none): the draft's cache keeps what it
        holds of the accepted path, and the next tree is drafted; returns it and its root."""
        proposal, verdict, ahead = self.missed
        pick_after = self.children.after(self.seed)

        def resume_and_draft():
            pending = resume_pending(self.run, proposal, verdict, ahead)
            return draft_step(self.run, self.plan, pending, pick_after([])), pending[-1]

        return self._timed(resume_and_draft)

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        value = self.worker.call(fn, *args)
        self.gate.record_drafting(time.perf_counter() - t0)
        return value

    def verify(self, proposal: Proposal, root: int):
        """Verify ``proposal`` (``root`` first) and commit the target; returns the verdict and
        the looked-ahead step when its bet hit (None otherwise: see :meth:`draft_after_miss`)."""
        run, stats = self.run, self.run.stats
        self.seed = self.children.next_seed()  # drawn whether or not the next tree is bet on
        guess = guess_of(proposal, run.chooser.stop_tokens, _room(run))
        job = None
        if guess is not None and self.gate.look_ahead():
            pick_after = self.children.after(self.seed)
            job = self.worker.submit(look_ahead, run, self.plan, proposal, guess, pick_after)
            stats.lookahead_steps += 1
        t0, target_base = time.perf_counter(), run.target.length
        verdict = verify_tree(
            run.target, proposal, self.full_mask, root, run.chooser.decide(run.sequence)
        )
        waited = time.perf_counter()
        ahead = None if job is None else self.worker.result(job)
        if ahead is not None:
            stats.overlap_busy += ahead.seconds
            stats.overlap_wait += time.perf_counter() - waited
        hit = ahead is not None and ahead.hit(verdict.accepted, verdict.bonus)
        self.gate.record_step(job is not None, time.perf_counter() - t0, hit)
        commit_target(run.target, target_base, plan_commit(proposal, verdict))
        stats.lookahead_hits += hit
        self.missed = None if hit else (proposal, verdict, ahead)
        return verdict, (ahead if hit else None)


def _room(run: Run) -> int:
    """New tokens the call may still emit."""
    return run.sequence.setup.max_new_tokens - len(run.emitted)


# -------------------------------------------------------------------------------------------
# Sampled children on the worker
# -------------------------------------------------------------------------------------------
class _Extended:
    """The generated sequence followed by ``tokens`` (not emitted yet), as the children picker
    reads it."""

    def __init__(self, sequence, tokens: list[int]):
        self.sequence, self.tokens = sequence, list(tokens)

    def ids(self) -> torch.Tensor:
        return self.sequence.extended(self.tokens)

    def extended(self, path) -> torch.Tensor:
        return self.sequence.extended([*self.tokens, *path])


class TreeChildren:
    """How each tree's children are picked: the draft's top-k, or, for sampled children, drawn
    with a generator of the tree's own, seeded from a stream of seeds the caller's thread
    draws once per tree in step order (itself seeded once from the call's generator). So the
    worker's draws never interleave with the target's, and a tree is drawn with the same seed
    whether it was bet on or drafted after a miss: a seeded call repeats."""

    def __init__(self, run: Run):
        self.run, self.chooser = run, run.chooser
        self._seeds = None
        if self.chooser.sampled_children:
            given = self.chooser.setup.generator
            device = given.device if given is not None else "cpu"
            first = torch.randint(2**62, (1,), generator=given, device=device)
            self._seeds = torch.Generator().manual_seed(int(first))

    def next_seed(self) -> int | None:
        if self._seeds is None:
            return None
        return int(torch.randint(2**62, (1,), generator=self._seeds))

    def after(self, seed: int | None) -> Callable[[list[int]], object]:
        """``pick_after(tokens)``: the picker for the sequence followed by ``tokens`` (None:
        the draft's top-k)."""
        if seed is None:
            return lambda tokens: None
        chooser, sequence = self.chooser, self.run.sequence

        def pick_after(tokens):
            generator = torch.Generator(chooser.setup.device).manual_seed(seed)
            return chooser.children(_Extended(sequence, tokens), generator)

        return pick_after
