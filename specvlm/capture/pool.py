"""The captured steps of one model of a
:class:`~specvlm.speculative_decoder.SpeculativeDecoder` (its draft, or its target): static
caches and their compiled forwards, kept between calls and handed to one call at a time."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from torch import nn

from specvlm.capture.buckets import capacity_bucket
from specvlm.capture.runner import CapturedForward

MAX_FREE = 2  # free runners kept per device, dtype and thread


class CapturePool:
    """Runners by (device, dtype, capacity bucket; on a GPU also the thread): a call takes a
    free one (or a new one: two concurrent calls never share a cache) and gives it back when it
    ends. A runner is never reused for another device or dtype (the model moved: new runners,
    new graphs); its widths are compiled as trees need them. On a GPU each thread captures its
    own graphs (CUDA graph trees belong to the thread that recorded them). At most
    :data:`MAX_FREE` free runners are kept per device, dtype and thread (the least recently used
    go); :meth:`release` drops them all; the rest goes with this object."""

    def __init__(self, decoder: nn.Module, head: nn.Module, embed: nn.Module, role: str):
        self.decoder, self.head, self.embed = decoder, head, embed
        self.role = role  # "draft" / "target"
        self._free: dict[tuple, list[CapturedForward]] = {}
        self._lock = threading.Lock()
        self.runners = 0  # created so far
        # why capturing failed on this model (then capture="auto" stays eager); None: it did not
        self.failed: str | None = None

    def _key(self, capacity: int) -> tuple:
        device = next(self.decoder.parameters()).device
        thread = threading.get_ident() if device.type == "cuda" else None
        return str(device), str(self.embed.weight.dtype), thread, capacity

    @contextlib.contextmanager
    def runner(self, entries: int) -> Iterator[CapturedForward]:
        """A runner whose cache holds ``entries`` entries, for the duration of the block."""
        key = self._key(capacity_bucket(entries))
        with self._lock:
            free = self._free.setdefault(key, [])
            runner = free.pop() if free else None
        if runner is None:
            runner = CapturedForward(self.decoder, self.head, self.embed, key[-1], self.role)
            with self._lock:
                self.runners += 1
        try:
            yield runner
        finally:
            with self._lock:
                self._give_back(key, runner)

    def _give_back(self, key: tuple, runner: CapturedForward) -> None:
        runner.last_used = time.monotonic()
        if self.failed is not None:
            return  # never used again: dropped
        self._free.setdefault(key, []).append(runner)
        group = [
            (r.last_used, k, r) for k, rs in self._free.items() if k[:3] == key[:3] for r in rs
        ]
        for _, old_key, old in sorted(group, key=lambda item: item[0])[
            : max(len(group) - MAX_FREE, 0)
        ]:
            self._free[old_key].remove(old)

    def release(self) -> None:
        """Drop every free runner (caches and graphs; the next captured call builds new ones)."""
        with self._lock:
            self._free.clear()

    def memory_bytes(self) -> int:
        """The static caches' memory (runners not in use)."""
        with self._lock:
            return sum(r.memory_bytes() for rs in self._free.values() for r in rs)
