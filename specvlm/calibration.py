"""Per-forward costs of the target and the draft on the user's hardware, measured once.

The automatic policy (:mod:`specvlm.policy`) weighs speculation against plain decoding with the
time one forward of ``n`` new tokens takes after a cache of ``c`` entries, for each model. Those
times do not depend on the tokens, so they are measured on synthetic inputs: a prompt of ``c``
token ids is prefilled into a fresh cache (timed: the prefill cost), then forwards of
``n = 1, 2, 4, ...`` tokens are fed through the same attention plans the loop uses (tree
attention for the target's verification, a masked level for the draft) and rolled back. Each
time is the fastest of a few repeats, and the models take turns within a repeat, so a busy
machine slows both alike. Contexts are measured at powers of two (:func:`context_bucket`) when a
call first needs them; :class:`ForwardCosts` interpolates between what was measured.

A probe with a ``runner`` measures the captured steps (:mod:`specvlm.capture`) the call
will run, on the call's own runner (a captured forward's cost follows the cache's capacity).

Must run with both decoders' attention routed (:func:`specvlm.attention.routed_attention`),
under ``torch.no_grad()``, as ``SpeculativeDecoder.generate`` runs the loop.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

import torch
from torch import nn

from specvlm import positions
from specvlm.attention import BasePlan, MaskedPlan, TreePlan, attention_plan
from specvlm.capture.buckets import width_bucket
from specvlm.capture.side import StaticSide
from specvlm.capture.steps import warm
from specvlm.decoder import decoder_forward, new_cache
from specvlm.devices import cuda_devices, synchronized_now
from specvlm.families import Family
from specvlm.side import Side, ones_mask

# Forward widths measured: the target verifies up to 65 tokens (a 64-node tree and its root),
# the draft feeds tree levels of up to ~16 nodes.
TARGET_WIDTHS = (1, 2, 4, 8, 16, 32, 64)
DRAFT_WIDTHS = (1, 2, 4, 8, 16, 32)
REPEATS = 3
MIN_CONTEXT = 16


def context_bucket(context: int) -> int:
    """The power of two nearest to ``context`` (log scale), at least :data:`MIN_CONTEXT`."""
    if context <= MIN_CONTEXT:
        return MIN_CONTEXT
    return 1 << round(math.log2(context))


@dataclass
class ForwardCosts:
    """One model's measured costs on one device and dtype: ``forward[c][n]`` seconds for a
    forward of ``n`` tokens after ``c`` cached ones, ``prefill[c]`` for a prompt of ``c``."""

    forward: dict[int, dict[int, float]] = field(default_factory=dict)
    prefill: dict[int, float] = field(default_factory=dict)
    # captured steps: a forward of n tokens runs padded to width_bucket(n), and costs that
    bucketed: bool = False

    def has(self, bucket: int) -> bool:
        return bucket in self.forward

    def seconds(self, n: int, context: int) -> float:
        """A forward of ``n`` tokens after ``context``: piecewise linear in ``n`` (linear
        beyond the widest measured), linear in the context between measured buckets (the
        nearest one outside them)."""
        if self.bucketed and n > 0:
            n = width_bucket(n)
        return _between(self.forward, context, lambda row: _interpolate(row, n))

    def prefill_seconds(self, context: int) -> float:
        """A prefill of ``context`` tokens (linear between measured buckets)."""
        return _between(self.prefill, context, lambda value: value)


def _interpolate(row: dict[int, float], n: int) -> float:
    widths = sorted(row)
    if n <= widths[0]:
        return row[widths[0]]
    i = bisect_left(widths, n)
    if i == len(widths):
        a, b = widths[-2], widths[-1]
    else:
        a, b = widths[i - 1], widths[i]
    slope = (row[b] - row[a]) / (b - a)
    return max(row[a] + slope * (n - a), 0.0)


def _between(table: dict, context: int, value_of) -> float:
    if not table:
        raise KeyError("nothing measured yet")
    contexts = sorted(table)
    if context <= contexts[0]:
        return value_of(table[contexts[0]])
    if context >= contexts[-1]:
        return value_of(table[contexts[-1]])
    i = bisect_left(contexts, context)
    a, b = contexts[i - 1], contexts[i]
    va, vb = value_of(table[a]), value_of(table[b])
    return va + (vb - va) * (context - a) / (b - a)


@dataclass(frozen=True)
class Probe:
    """What to measure for one model: its role (``"target"`` verifies with tree attention,
    ``"draft"`` feeds masked levels), the context buckets, the widths."""

    role: str
    model: nn.Module
    buckets: tuple[int, ...]
    widths: tuple[int, ...]
    # the model's captured steps to measure on (a specvlm.capture runner; None: eager). Its
    # widths are compiled before anything is timed; contexts are capped to fit its cache.
    runner: object | None = None


def measure(family: Family, probes: list[Probe], repeats: int = REPEATS) -> dict:
    """Measure every probe's buckets; returns ``{(role, bucket): (prefill_s, {n: s})}``, each
    time the fastest of ``repeats``, the probes taking turns within a repeat."""
    devices = cuda_devices(*(p.model for p in probes))
    best: dict[tuple[str, int], tuple[float, dict[int, float]]] = {}
    for _ in range(repeats):
        for probe in probes:
            for bucket in probe.buckets:
                prefill, row = _measure_once(family, probe, bucket, devices)
                old = best.get((probe.role, bucket))
                if old is not None:
                    prefill = min(prefill, old[0])
                    row = {n: min(s, old[1][n]) for n, s in row.items()}
                best[(probe.role, bucket)] = (prefill, row)
    return best


def _measure_once(family: Family, probe: Probe, context: int, devices) -> tuple[float, dict]:
    model = probe.model
    limit = getattr(family.text_config(model), "max_position_embeddings", None)
    if limit:  # a bucket may round past the model's positions: measure just below them
        context = max(1, min(context, limit - max(probe.widths)))
    if probe.runner is not None:  # and within the static cache, padding included
        context = max(1, min(context, probe.runner.capacity - width_bucket(max(probe.widths))))
    decoder, head = family.decoder(model), family.lm_head(model)
    embed = model.get_input_embeddings()
    device = next(decoder.parameters()).device
    vocab = head.weight.shape[0]
    ids = torch.randint(0, vocab, (1, context), generator=torch.Generator().manual_seed(context))
    ids = ids.to(embed.weight.device)
    pos = positions.prompt_positions(None, context, family.mrope, device)
    cache = new_cache()
    t0 = synchronized_now(devices)
    with attention_plan(BasePlan()):
        decoder_forward(
            decoder,
            head,
            cache,
            embed(ids).to(device),
            pos,
            ones_mask(context, device),
            logits_rows=slice(context - 1, context),
        )
    prefill = synchronized_now(devices) - t0
    side = Side(decoder, head, embed, cache, positions.next_positions(pos), family.mrope, device)
    if probe.runner is not None:
        side = StaticSide.adopt(side, probe.runner)
        warm(side, tuple(sorted({width_bucket(n) for n in probe.widths})))
    row = {}
    for n in probe.widths:
        plan = _plan(probe.role, n, context, device)
        t0 = synchronized_now(devices)
        side.step(
            [(7 * i + 1) % vocab for i in range(n)],
            torch.arange(n),
            plan,
            ones_mask(context + n, device),
            slice(None),
        )
        row[n] = synchronized_now(devices) - t0
        side.keep(context, [])
    return prefill, row


def _plan(role: str, n: int, context: int, device):
    """The attention plan the loop uses for a forward of ``n`` tokens on this side."""
    if n == 1:
        return BasePlan()
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    if role == "target":
        return TreePlan(causal.to(device))
    mask = torch.ones(1, 1, n, context + n, dtype=torch.bool)
    mask[0, 0, :, context:] = causal
    return MaskedPlan(mask.to(device))
