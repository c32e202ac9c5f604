"""Transformers' repetition penalty, for tree verification.

``generate`` divides (or, for negative logits, multiplies) the logit of every token already in
the sequence by ``penalty`` before its greedy argmax, in fp32. In a token tree every node has its
own sequence: the prompt, the tokens emitted so far, and the node's path from the root. This
module applies exactly that per node, so verification picks what ``generate`` would pick.
"""

from __future__ import annotations

import torch


def penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """``logits`` fp32 ``[rows, V]``; ``seen`` bool ``[rows, V]`` (or ``[V]``)."""
    hit = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, hit, logits)


class RepetitionPenalty:
    """Tracks the tokens of the sequence and penalises prefill and verification logits."""

    def __init__(self, penalty: float, prompt_ids: torch.Tensor, vocab: int, device):
        self.penalty = float(penalty)
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.seen[prompt_ids.reshape(-1).to(device)] = True

    def add(self, tokens: list[int]) -> None:
        self.seen[torch.tensor(tokens, device=self.seen.device)] = True

    def last(self, logits: torch.Tensor) -> torch.Tensor:
        """Penalised logits ``[rows, V]`` whose sequences are all exactly the tracked one."""
        return penalize(logits.float(), self.seen, self.penalty)

    def tree(self, logits: torch.Tensor, ancestors: torch.Tensor, node_tokens: list[int]):
        """``logits`` ``[N + 1, V]`` of the root and the nodes; node ``i`` also counts the
        tokens of its ancestors-or-self (``ancestors`` bool ``[N, N]``)."""
        seen = self.seen.expand(logits.shape[0], -1).clone()
        rows, cols = torch.nonzero(ancestors, as_tuple=True)
        tokens = torch.tensor(node_tokens, device=seen.device)[cols.to(seen.device)]
        seen[rows.to(seen.device) + 1, tokens] = True
        return penalize(logits.float(), seen, self.penalty)
