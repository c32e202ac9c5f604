"""Timing one generation method on one input: time to first token, decode, end to end.

Every method (the target's own ``generate``, transformers' assisted generation, SpecVLM) is
timed the same way: a streamer records when the prompt is handed over, when the first new token
arrives and when generation ends. ``decode_s`` is end minus first token, so prefill (and, for
SpecVLM, scoring, pruning and the draft prefill) is excluded from it and included in ``e2e_s``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from specvlm.devices import synchronized_now


class TimingStreamer:
    """A ``generate`` streamer that only records times (device-synchronised when given CUDA
    devices, so a token's time is when it exists, not when it was queued)."""

    def __init__(self, devices=()):
        self.devices = list(devices)
        self.start = self.first = self.end_time = None
        self.tokens = 0

    def put(self, value) -> None:
        if self.start is None:  # the prompt
            self.start = synchronized_now(self.devices)
            return
        self.tokens += int(value.numel())
        if self.first is None:
            self.first = synchronized_now(self.devices)

    def end(self) -> None:
        self.end_time = synchronized_now(self.devices)


@dataclass
class Timing:
    new_tokens: int
    ttft_s: float  # call start -> first new token
    decode_s: float  # first new token -> end
    e2e_s: float  # call start -> end
    decode_tokens_per_s: float


def timed(generate: Callable[[TimingStreamer], torch.Tensor], devices=()):
    """Run ``generate(streamer)`` and return ``(output, Timing)``."""
    streamer = TimingStreamer(devices)
    t0 = synchronized_now(streamer.devices)
    out = generate(streamer)
    end = streamer.end_time
    if end is None:  # a generate that never called end()
        end = synchronized_now(streamer.devices)
    first = streamer.first if streamer.first is not None else end
    decode = end - first
    return out, Timing(
        streamer.tokens, first - t0, decode, end - t0, decode_rate(streamer.tokens, decode)
    )


def decode_rate(new_tokens: int, decode_s: float) -> float:
    """Tokens per second after the first one (0 when there is nothing to rate)."""
    return (new_tokens - 1) / decode_s if decode_s > 0 and new_tokens > 1 else 0.0


def fastest(timings: list[Timing]) -> Timing:
    """The best of repeated runs of one method on one input (they produce the same tokens): the
    shortest time to first token, decode and end-to-end time, each on its own."""
    if not timings:
        raise ValueError("fastest needs at least one timing")
    decode = min(t.decode_s for t in timings)
    tokens = timings[0].new_tokens
    return Timing(
        tokens,
        min(t.ttft_s for t in timings),
        decode,
        min(t.e2e_s for t in timings),
        decode_rate(tokens, decode),
    )


def time_alternately(
    methods: dict[str, Callable[[TimingStreamer], torch.Tensor]], repeats: int, devices=()
) -> dict[str, tuple[list[torch.Tensor], Timing]]:
    """Run every method ``repeats`` times, the methods taking turns (so the drifts of a shared
    machine hit all of them); per method, the outputs of all its runs and its :func:`fastest`
    timing."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs: dict[str, list] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, generate in methods.items():
            runs[name].append(timed(generate, devices))
    return {
        name: ([out for out, _ in rs], fastest([t for _, t in rs])) for name, rs in runs.items()
    }
