"""Captured draft steps: the draft's forwards at engine speed.

After its prefill, the draft's forwards are small and of shapes known in advance (a chain of one
or two tokens, the tree's levels), repeated thousands of times per call: the ideal case for
capture. With ``accelerate(..., capture=True)`` (or ``"auto"`` where it pays) the draft runs on

* a **static KV cache** (:mod:`specvlm.capture.runner`): preallocated once per (device, dtype,
  capacity bucket) and reused across calls; the prefill is copied in, commits compact it in
  place, and every forward writes at a length we own;
* **compiled forwards**, one per width bucket (powers of two: a forward of ``n`` tokens runs
  padded to the next one; the padding is masked out and overwritten), each its own compiled
  code object with one graph: ``torch.compile`` on a CPU, ``torch.compile(mode=
  "reduce-overhead")`` on a GPU, i.e. CUDA graphs replayed over the static buffers;
* an explicit additive mask ``[1, 1, width, capacity]`` per forward (:mod:`specvlm.capture.side`)
  saying what each row sees: the cache, and its own ancestors among the new tokens.

The draft only proposes; the target verifies every token with its own eager forward, so the
output is exactly the same with or without capture (tested), whatever the draft computes.
:func:`capture_decision` says what ``capture="auto"`` does on a device.
"""

from specvlm.capture.decision import capture_decision, check_capturable
from specvlm.capture.pool import DraftCapture
from specvlm.capture.side import StaticSide

__all__ = ["DraftCapture", "StaticSide", "capture_decision", "check_capturable"]
