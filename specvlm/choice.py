"""How tokens are chosen from the logits: the generation's logits processing (transformers' own,
:mod:`specvlm.generation`), then the greedy or sampled choice at the prompt's end and the
acceptance of a drafted tree (:mod:`specvlm.sampler`); and, for sampling with drafted-at-random
children, how the draft picks them."""

from __future__ import annotations

import torch

from specvlm import generation, sampler
from specvlm.drafting import Children, Proposal
from specvlm.generation import GeneratedSequence, GenerationSetup
from specvlm.verify import Verdict

CHILDREN = ("top_k", "sampled")


class TokenChooser:
    """Chooses tokens as ``generate`` would, for one call (its :class:`GenerationSetup`).

    ``children``: how the draft proposes a node's children when sampling: ``"top_k"`` (its
    top-k tokens; the target samples and descends where its sample is a child) or ``"sampled"``
    (drawn without replacement from the draft's processed distribution; recursive rejection
    sampling). Greedy decoding always uses the top-k. Both are lossless (``docs/design.md``).
    """

    def __init__(self, setup: GenerationSetup, children: str = "top_k"):
        # ``children`` is validated once, by accelerate()
        self.setup = setup
        self.sampling = setup.do_sample
        self.sampled_children = self.sampling and children == "sampled"
        self.stop_tokens = setup.stop_token_ids

    def _scores(self, rows, logits: torch.Tensor) -> torch.Tensor:
        """``rows()``: the rows' sequences, built only when a processor needs them."""
        if not self.setup.processes_scores:
            return logits.to(device=self.setup.device, dtype=torch.float32)
        return generation.process_scores(self.setup, rows(), logits)

    def first_token(self, sequence: GeneratedSequence, logits: torch.Tensor) -> int:
        """The token after the prompt, from the prefill's last logits ``[1, V]``."""
        scores = self._scores(lambda: [sequence.ids()], logits)
        if not self.sampling:
            return int(scores[0].argmax())
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.setup.generator)[0, 0])

    def children(self, sequence: GeneratedSequence, generator: torch.Generator | None = None):
        """The picker ``draft_tree`` uses (None: the draft's top-k); sampled children are drawn
        with ``generator`` (default: the call's)."""
        if not self.sampled_children:
            return None
        generator = self.setup.generator if generator is None else generator

        def pick(logits: torch.Tensor, k: int, paths: list[list[int]]) -> Children:
            def rows():
                return [sequence.extended(path) for path in paths]

            q = torch.softmax(self._scores(rows, logits), dim=-1)
            drawn = sampler.sample_children(q, k, generator)
            probs = torch.gather(q, 1, drawn.clamp(min=0)) * (drawn >= 0)
            return Children(drawn.tolist(), probs.tolist(), q)

        return pick

    def decide(self, sequence: GeneratedSequence):
        """The function ``verify_tree`` calls with the target's logits ``[N + 1, V]``."""

        def decide(proposal: Proposal, logits: torch.Tensor) -> Verdict:
            tree = proposal.tree

            def rows():
                return [sequence.ids()] + [sequence.extended(p) for p in proposal.paths()]

            scores = self._scores(rows, logits)
            if not self.sampling:
                accepted, bonus = sampler.accept_greedy(
                    tree, proposal.tokens, scores.argmax(dim=-1)
                )
            else:
                accepted, bonus = sampler.accept_sampled(
                    tree,
                    proposal.tokens,
                    torch.softmax(scores, dim=-1),
                    draft_probs=proposal.draft_probs,
                    generator=self.setup.generator,
                )
            return Verdict(accepted, bonus)

        return decide
