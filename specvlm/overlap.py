"""Overlapped drafting: the draft works while the target does (``accelerate(overlap=...)``).

The sequential loop (:func:`specvlm.speculation.speculate`) adds the draft's time and the
target's: draft a tree, then verify it, then draft the next one. Here the draft runs on a
worker of its own (a thread; on a CUDA draft, also a stream of its own) and two things overlap:

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
after it, made with the draft's own random stream and independent of the target's acceptance
(sampling). Tests: ``tests/test_overlap.py``.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from specvlm.drafting import EMPTY, DraftPlan, Proposal, feed_pending
from specvlm.lookahead_gate import LookaheadGate
from specvlm.speculation import (
    Run,
    draft_decoder_inputs,
    emit_step,
    gives_up,
)
from specvlm.verify import commit_draft, commit_target, plan_commit, verify_mask, verify_tree

OVERLAP_SETTINGS = ("auto", True, False)


# -------------------------------------------------------------------------------------------
# Whether a call overlaps
# -------------------------------------------------------------------------------------------
def check_overlap(value) -> object:
    """``accelerate(overlap=)``, validated: ``"auto"``, ``True`` or ``False``."""
    if not any(value is v or (isinstance(value, str) and value == v) for v in OVERLAP_SETTINGS):
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
class DraftWorker:
    """One thread for the draft's work in one ``generate`` call; with ``own_stream`` (a CUDA
    draft on a device the target does not use), one stream.

    Each job starts after everything the caller had queued on the draft's device (an event on
    the caller's stream), runs under ``torch.no_grad()`` in a copy of the caller's context, and
    its result is handed over with the caller's stream waiting for the job's work (no host
    synchronisation). Every job of the call finishes before :meth:`close` returns.

    Why a stream only on a device of the draft's own: memory the job frees goes back to the
    stream it was allocated on, and on a device the caller is using at the same time (the
    target's verification) the caller could reuse it while the job's kernels still read it.
    On a shared GPU the job runs on the default stream: its kernels queue behind the target's,
    and only the host work (Python, launches) overlaps."""

    def __init__(self, device: torch.device, own_stream: bool = False):
        self.device = device
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specvlm-draft")
        side = own_stream and device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if side else None
        self.busy = 0.0  # seconds the worker spent on jobs
        self.waited = 0.0  # seconds callers waited for a job's result

    def submit(self, fn: Callable, *args) -> Future:
        ready = None
        if self._stream is not None:
            ready = torch.cuda.current_stream(self.device).record_event()
        return self._pool.submit(contextvars.copy_context().run, self._job, ready, fn, args)

    def result(self, job: Future):
        """The job's value, once it is done (its exception, raised here, if it failed)."""
        t0 = time.perf_counter()
        value, done = job.result()
        self.waited += time.perf_counter() - t0
        if done is not None:
            torch.cuda.current_stream(self.device).wait_event(done)
        return value

    def _job(self, ready, fn: Callable, args: tuple):
        t0 = time.perf_counter()
        stream = self._stream
        try:
            with torch.no_grad(), torch.cuda.stream(stream) if stream else nullcontext():
                if ready is not None:
                    stream.wait_event(ready)
                value = fn(*args)
                done = stream.record_event() if stream is not None else None
        finally:
            self.busy += time.perf_counter() - t0
        return value, done

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@contextmanager
def overlapping(run: Run, setting, gate: LookaheadGate):
    """The block runs ``run`` overlapped where :func:`decide_overlap` says so for ``setting``
    (and the run speculates), its look-aheads where ``gate`` says they pay; its draft worker is
    closed, every job finished, on the way out, also on error."""
    on, run.stats.overlap_reason = decide_overlap(setting, run.target_model, run.draft_model)
    if not (on and run.settings.speculate):
        yield
        return
    device = next(run.settings.family.decoder(run.draft_model).parameters()).device
    target_devices = {p.device for p in run.target_model.parameters()}
    worker = DraftWorker(device, own_stream=device not in target_devices)
    try:
        attach(run, worker, gate)
        yield
    finally:
        worker.close()


def attach(run: Run, worker: DraftWorker, gate: LookaheadGate) -> None:
    """Make ``run`` overlapped: the draft's decoder inputs start now, on the worker (they run
    while the target prefills), and step 4 is :func:`speculate_overlapped`."""
    settings = run.settings
    job = worker.submit(draft_decoder_inputs, settings.family, run.draft_model, run.inputs)
    run.draft_inputs = lambda: worker.result(job)
    run.speculator = lambda run, root: speculate_overlapped(run, root, worker, gate)
    run.stats.overlapped = True


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
    draft = run.draft
    draft.keep(proposal.prefix_len, guess.nodes[: guess.fed])  # fed nodes sit at their index
    draft.next_pos = proposal.root_pos + 1 + guess.fed
    logits, _, _ = feed_pending(draft, guess.tokens[-1:])
    bonus = int(logits[0, -1].argmax())
    draft.next_pos = draft.next_pos + 1
    settings = run.settings
    following = run.drafter(
        draft,
        plan,
        [bonus],
        run.chooser.stop_tokens,
        settings.min_draft_confidence,
        pick_after([*guess.tokens, bonus]),
    )
    return Ahead(guess, bonus, following)


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
    t0, busy0, waited0 = run.now(), worker.busy, worker.waited
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
                proposal, root = step.draft(step.pending), step.pending[-1]
    finally:
        run.stats.decode += run.now() - t0
        run.stats.overlap_busy += worker.busy - busy0
        run.stats.overlap_wait += worker.waited - waited0
        run.stats.overlap_reason += f"; {gate.describe()}"


class _Stepper:
    """The overlapped loop's two moves for one call: drafting on the caller's thread, and
    verifying with the next tree drafted ahead on the worker."""

    def __init__(self, run: Run, worker: DraftWorker, gate: LookaheadGate):
        self.run, self.worker, self.gate = run, worker, gate
        self.plan = DraftPlan.of(run.settings.tree)
        self.full_mask = verify_mask(run.settings.tree)
        self.pick_after = children_after(run)
        self.pending: list[int] = []  # after a miss: what the draft must be fed next

    def draft(self, pending: list[int]) -> Proposal:
        """The sequential loop's drafting (first, and after a miss)."""
        run, t0 = self.run, time.perf_counter()
        proposal = run.drafter(
            run.draft,
            self.plan,
            pending,
            run.chooser.stop_tokens,
            run.settings.min_draft_confidence,
            self.pick_after([]),
        )
        self.gate.record_drafting(time.perf_counter() - t0)
        return proposal

    def verify(self, proposal: Proposal, root: int):
        """Verify ``proposal`` (``root`` first) and commit the target; returns the verdict and
        the looked-ahead step when it hit (None otherwise: ``self.pending`` is then set)."""
        run, stats = self.run, self.run.stats
        guess = guess_of(proposal, run.chooser.stop_tokens, _room(run))
        job = None
        if guess is not None and self.gate.look_ahead():
            job = self.worker.submit(look_ahead, run, self.plan, proposal, guess, self.pick_after)
            stats.lookahead_steps += 1
        t0, target_base = time.perf_counter(), run.target.length
        verdict = verify_tree(
            run.target, proposal, self.full_mask, root, run.chooser.decide(run.sequence)
        )
        ahead = None if job is None else self.worker.result(job)
        hit = ahead is not None and ahead.hit(verdict.accepted, verdict.bonus)
        self.gate.record_step(job is not None, time.perf_counter() - t0, hit)
        commit_target(run.target, target_base, plan_commit(proposal, verdict))
        stats.lookahead_hits += hit
        if hit:
            return verdict, ahead
        self.pending = resume_pending(run, proposal, verdict, ahead)
        return verdict, None


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


def children_after(run: Run) -> Callable[[list[int]], object]:
    """``pick_after(tokens)``: the children picker for the sequence followed by ``tokens``
    (None: the draft's top-k). Sampled children draw from a generator of the draft's own,
    seeded once from the call's: the worker's draws never interleave with the target's, so a
    seeded call gives the same tokens every time."""
    chooser = run.chooser
    if not chooser.sampled_children:
        return lambda tokens: None
    setup = chooser.setup
    given = setup.generator
    seed = torch.randint(
        2**62, (1,), generator=given, device=given.device if given is not None else "cpu"
    )
    generator = torch.Generator(setup.device).manual_seed(int(seed))
    return lambda tokens: chooser.children(_Extended(run.sequence, tokens), generator)
