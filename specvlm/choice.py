"""How the next token is chosen from the target's logits, at the prompt's end and at every node
of a verified tree: the generation's logits processing, then greedy or sampled acceptance."""

from __future__ import annotations

import torch

from specvlm.drafting import Proposal
from specvlm.penalty import RepetitionPenalty
from specvlm.trees import greedy_accept
from specvlm.verify import Verdict


class TokenChooser:
    """Greedy choice after the generation's repetition penalty (if any)."""

    def __init__(self, eos: set[int], penalty: float | None, vocab: int, device):
        self.stop_tokens = frozenset(eos)
        self.penalty = penalty
        self.vocab, self.device = vocab, device

    def _penalty(self, sequence: list[int]) -> RepetitionPenalty | None:
        if self.penalty is None:
            return None
        return RepetitionPenalty(self.penalty, torch.tensor(sequence), self.vocab, self.device)

    def first_token(self, sequence: list[int], logits: torch.Tensor) -> int:
        rep = self._penalty(sequence)
        scores = logits.float() if rep is None else rep.last(logits)
        return int(scores[0].argmax())

    def children(self, sequence: list[int]):
        return None  # the draft's top-k

    def decide(self, sequence: list[int]):
        rep = self._penalty(sequence)

        def decide(proposal: Proposal, logits: torch.Tensor) -> Verdict:
            tree = proposal.tree
            if rep is None:
                scores = logits.float()
            else:
                scores = rep.tree(logits, tree.ancestor_mask(), proposal.tokens)
            accepted, bonus = greedy_accept(
                tree, torch.tensor(proposal.tokens), scores.argmax(dim=-1)
            )
            return Verdict(accepted, bonus)

        return decide
