"""Whether a look-ahead pays (:mod:`specvlm.overlap`), learnt from the steps of one decoder's
calls.

A look-ahead saves a step's drafting when it hits (probability ``h``, the hits seen so far) and
costs what it adds to the target's step: the time the caller waits for the worker after
verifying, and, where both models share cores (a CPU, one GPU), the verification's slowdown
while the draft runs beside it. So the gate compares, per step,

    gain = h * (seconds of drafting on the caller, a miss's cost)
    cost = (seconds of a step's verification with a look-ahead, join included)
         - (seconds of one without)

and looks ahead while ``gain > cost``. It explores first (:data:`EXPLORE` steps of each kind:
steps where no guess could be made count as steps without) and then takes the other branch
every :data:`PROBE_EVERY` steps, so that estimates follow the load. Shared by the calls of one
decoder, in several threads (a lock). Decides the work, never the output. ``overlap="auto"``
gates; ``overlap=True`` looks ahead at every step (:class:`AlwaysLookAhead`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

EXPLORE = 6  # steps of each kind before the gate decides
PROBE_EVERY = 16  # then every so many steps, the branch it did not choose
SMOOTHING = 0.2  # weight of a new sample in the running means


@dataclass
class _Mean:
    value: float = 0.0
    count: int = 0

    def add(self, sample: float) -> None:
        self.count += 1
        weight = max(SMOOTHING, 1.0 / self.count)
        self.value += weight * (sample - self.value)


class LookaheadGate:
    def __init__(self):
        self._lock = threading.Lock()
        self._with = _Mean()  # verification seconds, a look-ahead beside it (join included)
        self._without = _Mean()  # verification seconds alone
        self._drafting = _Mean()  # seconds of drafting on the caller's thread
        self._hits = _Mean()  # 1.0 per hit, 0.0 per miss
        self._decisions = 0

    def look_ahead(self) -> bool:
        """Whether this step should look ahead."""
        with self._lock:
            if self._with.count < EXPLORE:
                return True
            if self._without.count < EXPLORE:
                return False
            self._decisions += 1
            pays = self._pays()
            return (not pays) if self._decisions % PROBE_EVERY == 0 else pays

    def _pays(self) -> bool:
        gain = self._hits.value * self._drafting.value
        return gain > self._with.value - self._without.value

    def record_step(self, looked_ahead: bool, verify_s: float, hit: bool) -> None:
        with self._lock:
            if looked_ahead:
                self._with.add(verify_s)
                self._hits.add(1.0 if hit else 0.0)
            else:
                self._without.add(verify_s)

    def record_drafting(self, seconds: float) -> None:
        with self._lock:
            self._drafting.add(seconds)

    def describe(self) -> str:
        """The estimates, one line (for ``last_stats.overlap_reason``)."""
        with self._lock:
            return (
                f"look-ahead hit rate {self._hits.value:.2f}, drafting "
                f"{self._drafting.value * 1e3:.1f} ms, verification "
                f"{self._without.value * 1e3:.1f} ms alone / {self._with.value * 1e3:.1f} ms "
                "beside the draft"
            )


class AlwaysLookAhead(LookaheadGate):
    """``overlap=True``: every step looks ahead (the estimates are still kept and reported)."""

    def look_ahead(self) -> bool:
        return True
