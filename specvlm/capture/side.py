"""A :class:`~specvlm.side.Side` on captured steps (the draft's, or the target's): the same
``step`` / ``keep`` / ``length`` contract, run on a
:class:`~specvlm.capture.runner.CapturedForward`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specvlm.attention import AttentionPlan, BasePlan, MaskedPlan, TreePlan, attention_plan
from specvlm.capture.buckets import width_bucket
from specvlm.capture.runner import CapturedForward
from specvlm.decoder import fill_static_cache, keep_static_cache_entries
from specvlm.side import PLACEHOLDER_ID, Side


@dataclass
class StaticSide(Side):
    """A side whose forwards are captured steps. Made by :meth:`adopt` from the side the eager
    prefill returned; ``cache`` is the runner's static cache."""

    runner: CapturedForward | None = None
    filled: int = 0  # entries of the static cache in use

    @classmethod
    def adopt(cls, side: Side, runner: CapturedForward) -> StaticSide:
        """The prefilled ``side``'s cache copied into ``runner``'s; positions and vocabulary
        settings carried over."""
        filled = fill_static_cache(runner.cache, side.cache)
        return cls(
            side.decoder,
            side.lm_head,
            side.embed,
            runner.cache,
            side.next_pos,
            side.mrope,
            side.device,
            logits_width=side.logits_width,
            known_ids=side.known_ids,
            forwards=side.forwards,
            runner=runner,
            filled=filled,
        )

    @property
    def length(self) -> int:
        return self.filled

    def step(
        self,
        tokens,
        offsets: torch.Tensor,
        plan: AttentionPlan,
        attention_mask: torch.Tensor,
        logits_rows: slice,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`Side.step`, padded to the width bucket; ``plan`` (:class:`BasePlan`,
        :class:`MaskedPlan` or :class:`TreePlan`) becomes the explicit mask
        (``attention_mask`` is not needed)."""
        n = len(tokens)
        width = width_bucket(n)
        if self.filled + width > self.runner.capacity:
            raise RuntimeError(
                f"the static cache ({self.runner.capacity} entries) cannot take {width} "
                f"more after {self.filled}"
            )
        fed = _padded(self.feedable(tokens), width)
        padded = torch.cat([offsets, offsets[-1:].expand(width - n)])
        ids, pos = self.inputs(fed, padded, start)
        mask = step_mask(plan, self.filled, n, width, self.runner)
        with attention_plan(BasePlan()):  # an eager fallback runs the model's own attention
            logits = self.runner(ids, pos, mask, self.filled)
        self.filled += n
        self.forwards += 1
        return self.present(logits[:, :n][:, logits_rows])

    def keep(self, start: int, offsets: list[int]) -> None:
        keep_static_cache_entries(self.cache, start, offsets)
        self.filled = start + len(offsets)


def _padded(fed, width: int):
    """The fed tokens (ints, or a device tensor) and :data:`PLACEHOLDER_ID` up to ``width``."""
    if isinstance(fed, torch.Tensor):
        return torch.cat([fed, fed.new_full((width - len(fed),), PLACEHOLDER_ID)])
    return list(fed) + [PLACEHOLDER_ID] * (width - len(fed))


def step_mask(
    plan: AttentionPlan, filled: int, n: int, width: int, runner: CapturedForward
) -> torch.Tensor:
    """Additive ``[1, 1, width, capacity]``: 0 where a row sees a key, the dtype's minimum
    elsewhere. Row ``i < n`` sees what ``plan`` says over the ``filled`` cached entries and the
    ``n`` new ones; padding rows see entry 0 only; nothing sees entries past ``filled + n``
    (padding, or stale entries left by compaction)."""
    visible = torch.zeros(width, runner.capacity, dtype=torch.bool, device=runner.device)
    if isinstance(plan, MaskedPlan):
        visible[:n, : filled + n] = plan.mask[0, 0].to(runner.device)
    elif isinstance(plan, TreePlan):  # the whole prefix, and the tree's own visibility
        visible[:n, :filled] = True
        visible[:n, filled : filled + n] = plan.tree_mask.to(runner.device)
    elif isinstance(plan, BasePlan):
        visible[:n, :filled] = True
        causal = torch.ones(n, n, dtype=torch.bool, device=runner.device).tril()
        visible[:n, filled : filled + n] = causal
    else:
        raise TypeError(f"captured steps take a BasePlan, MaskedPlan or TreePlan, not {plan!r}")
    visible[n:, 0] = True
    mask = torch.zeros(1, 1, width, runner.capacity, dtype=runner.dtype, device=runner.device)
    return mask.masked_fill_(~visible, torch.finfo(runner.dtype).min)
