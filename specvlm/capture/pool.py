"""The captured steps of one model of a :class:`~specvlm.accelerate.SpeculativeDecoder` (its
draft, or its target): static caches and their compiled forwards, kept between calls and handed
to one call at a time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torch import nn

from specvlm.capture.buckets import capacity_bucket
from specvlm.capture.runner import CapturedForward


class CapturePool:
    """Runners by (device, dtype, capacity bucket): a call takes a free one (or a new one: two
    concurrent calls never share a cache) and gives it back when it ends. A runner is never
    reused for another device or dtype (the model moved: new runners, new graphs); its widths
    are compiled as trees need them. Everything is released with this object."""

    def __init__(self, decoder: nn.Module, head: nn.Module, embed: nn.Module, role: str):
        self.decoder, self.head, self.embed = decoder, head, embed
        self.role = role  # "draft" / "target"
        self._free: dict[tuple, list[CapturedForward]] = {}
        self._lock = threading.Lock()
        self.runners = 0  # created so far
        # why capturing failed on this model (then capture="auto" stays eager); None: it did not
        self.failed: str | None = None

    def _key(self, capacity: int) -> tuple:
        weight = self.embed.weight
        device = next(self.decoder.parameters()).device
        return str(device), str(weight.dtype), capacity

    @contextlib.contextmanager
    def runner(self, entries: int) -> Iterator[CapturedForward]:
        """A runner whose cache holds ``entries`` entries, for the duration of the block."""
        key = self._key(capacity_bucket(entries))
        with self._lock:
            free = self._free.setdefault(key, [])
            runner = free.pop() if free else None
        if runner is None:
            runner = CapturedForward(self.decoder, self.head, self.embed, key[2], self.role)
            with self._lock:
                self.runners += 1
        try:
            yield runner
        finally:
            with self._lock:
                self._free.setdefault(key, []).append(runner)

    def memory_bytes(self) -> int:
        """The static caches' memory (runners not in use)."""
        with self._lock:
            return sum(r.memory_bytes() for rs in self._free.values() for r in rs)
