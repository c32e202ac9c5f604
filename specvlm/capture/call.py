"""The captured steps of one ``SpeculativeDecoder``'s pair, call by call: what ``capture=``
decides for each model, the runners a call holds, and the hooks that put its prefilled sides
on them (the loop itself knows nothing of capture: :attr:`specvlm.speculation.Run.adopt`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from torch import nn

from specvlm.capture.decision import capture_decision
from specvlm.capture.pool import CapturePool
from specvlm.capture.runner import CapturedForward, CaptureFailed
from specvlm.capture.side import StaticSide
from specvlm.capture.steps import adopter, draft_widths, entries_needed, verify_widths
from specvlm.drafting import draft_tree_on_device
from specvlm.dynamic_tree import DynamicTree

ROLES = ("draft", "target")


@dataclass
class CallRunners:
    """What one call captures: a runner per model (None: eager), and why, per model."""

    runners: dict[str, CapturedForward | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def reason(self) -> str:
        """One line: each model's decision."""
        return "; ".join(f"{role}: {self.reasons[role]}" for role in ROLES)


class PairCapture:
    """A :class:`CapturePool` per model of the pair, and ``capture=`` (``True`` is checked
    here, once: a clear error where a model cannot be captured)."""

    def __init__(self, family, target: nn.Module, draft: nn.Module, capture, speculate=None):
        if not (capture is True or capture is False or capture == "auto"):
            raise ValueError(f"capture must be True, False or 'auto', got {capture!r}")
        self.capture = capture
        self.models = {"draft": draft, "target": target}
        self.family = family
        self.pools = {
            role: CapturePool(
                family.decoder(model), family.lm_head(model), model.get_input_embeddings(), role
            )
            for role, model in self.models.items()
        }
        if capture is True:
            for role in ROLES if speculate is not False else ("target",):
                self.decide(role)

    def decide(self, role: str) -> tuple[bool, str]:
        model, pool = self.models[role], self.pools[role]
        decoder, head = self.family.decoder(model), self.family.lm_head(model)
        return capture_decision(self.capture, role, decoder, head, pool.failed)

    @contextlib.contextmanager
    def call(self, prompt_len: int, max_new_tokens: int, tree_nodes: int, speculate: bool):
        """The runners one call holds for its duration (``tree_nodes``: the largest tree it
        may verify; ``speculate`` False: no draft)."""
        entries = entries_needed(prompt_len, max_new_tokens, tree_nodes)
        found = CallRunners()
        with contextlib.ExitStack() as stack:
            for role in ROLES:
                if role == "draft" and not speculate:
                    capture, found.reasons[role] = False, "no draft in this call"
                else:
                    capture, found.reasons[role] = self.decide(role)
                runner = None
                if capture:
                    runner = stack.enter_context(self.pools[role].runner(entries))
                found.runners[role] = runner
            yield found

    def failed(self, found: CallRunners, error: CaptureFailed) -> None:
        """Capturing ``error.role`` failed under ``"auto"``: eager from now on (the call's
        runner is dropped, the reason kept)."""
        self.pools[error.role].failed = str(error)
        self.pools[error.role].release()
        found.runners[error.role] = None
        found.reasons[error.role] = self.decide(error.role)[1]

    def attach(self, found: CallRunners, run) -> None:
        """Put the call's sides on its runners when the loop has prefilled them; a captured
        draft drafting top-k children drafts on the device (one read to the host per step's
        drafting, not one per level: :func:`specvlm.drafting.draft_tree_on_device`)."""
        if all(runner is None for runner in found.runners.values()):
            return  # nothing captured this call
        tree = run.settings.tree
        top_k = not run.chooser.sampled_children and run.settings.min_draft_confidence == 0
        # a dynamic tree is read on the host level by level (its rerank): its own drafter
        if found.runners["draft"] is not None and top_k and not isinstance(tree, DynamicTree):
            run.drafter = draft_tree_on_device
        widths = {
            "draft": draft_widths(tree) if tree is not None else (),
            "target": verify_widths(tree) if tree is not None else (1,),
        }
        for role in ROLES:
            runner = found.runners[role]
            if runner is None:
                continue

            def on_failure(error, role=role):
                self.failed(found, error)
                run.stats.capture_reason = found.reason()

            forced = self.capture is True
            run.adopt[role] = adopter(runner, widths[role], None if forced else on_failure)

    def report(self, found: CallRunners, run) -> None:
        """What the call ran, into its stats (and any width whose compiled forward was
        dropped for eager)."""
        run.stats.capture_reason = found.reason()
        for role, runner in found.runners.items():
            if runner is None:
                continue
            if runner.eager_widths:
                widths = sorted(runner.eager_widths.items())
                dropped = ", ".join(f"{w} ({why})" for w, why in widths)
                run.stats.capture_reason += f"; {role} widths run eager: {dropped}"
            for note in runner.notes:
                run.stats.capture_reason += f"; {role}: {note}"
        run.stats.captured = isinstance(run.draft, StaticSide)
        run.stats.target_captured = isinstance(run.target, StaticSide)

    def release(self) -> None:
        """Drop both models' free runners (static caches, graphs)."""
        for pool in self.pools.values():
            pool.release()
