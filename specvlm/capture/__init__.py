"""Captured steps: the forwards after the prefills at engine speed.

After its prefill, the draft's forwards are small and of shapes known in advance (a chain of one
or two tokens, the tree's levels), repeated thousands of times per call: the ideal case for
capture; the target's verification has one shape per tree (its root and nodes). With
``accelerate(..., capture=True)`` (or ``"auto"``, :mod:`specvlm.capture.decision`) a model runs
on

* a **static KV cache** (:mod:`specvlm.capture.runner`): preallocated once per (device, dtype,
  capacity bucket) and reused across calls (:mod:`specvlm.capture.pool`); the prefill is copied
  in, commits compact it in place, and every forward writes at a length we own;
* **compiled forwards**, one per width bucket (powers of two: a forward of ``n`` tokens runs
  padded to the next one; the padding is masked out and overwritten), each its own compiled
  code object with one graph: ``torch.compile`` on a CPU, ``torch.compile(mode=
  "reduce-overhead")`` on a GPU, i.e. CUDA graphs replayed over the static buffers;
* an explicit additive mask ``[1, 1, width, capacity]`` per forward (:mod:`specvlm.capture.side`)
  saying what each row sees: the cache, and its own ancestors among the new tokens.

:mod:`specvlm.capture.call` wires a call: the runners it holds (the policy's calibration measures
the models on them) and the hooks that put the prefilled sides on them. The draft only proposes,
so its capture cannot change the output; the target's captured verification computes the same
logits as its eager one up to float rounding, as the eager verification does next to
``generate``; both are tested token for token against ``target.generate``.
"""

from specvlm.capture.decision import capture_decision, check_capturable
from specvlm.capture.pool import CapturePool
from specvlm.capture.runner import CaptureFailed
from specvlm.capture.side import StaticSide

__all__ = ["CaptureFailed", "CapturePool", "StaticSide", "capture_decision", "check_capturable"]
