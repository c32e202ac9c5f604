"""One static KV cache of a decoder (the draft's, or the target's) and its compiled forwards,
one per width bucket."""

from __future__ import annotations

import types

import torch
from torch import nn

from specvlm.decoder import cache_argument_name, new_static_cache, static_cache_tensors

# torch.compile's backend for captured steps. "inductor" is what ships; tests of the logic
# around it (caches, masks, fallbacks) may run "aot_eager", which traces the same graph and
# skips code generation (seconds per graph on a fresh machine).
COMPILE_BACKEND = "inductor"


class CaptureFailed(RuntimeError):
    """A forward could not be compiled / captured (``capture="auto"`` then runs eager);
    ``role``: whose (``"draft"`` / ``"target"``)."""

    def __init__(self, message: str, role: str):
        super().__init__(message)
        self.role = role


def _step(decoder, head, embed, cache, cache_name, ids, position_ids, mask, filled, device):
    """The function compiled per width: write position, embed, decode over the static cache,
    project. ``filled``: a 0-d device tensor, copied into every layer's write position inside
    the graph (one host-side fill per forward, not one per layer)."""
    for layer in cache.layers:
        layer.cumulative_length.copy_(filled)
    out = decoder(
        inputs_embeds=embed(ids).to(device),
        position_ids=position_ids,
        attention_mask=mask,
        use_cache=True,
        **{cache_name: cache},
    )
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
    return head(hidden.to(head.weight.device))


def _own_code_copy(function: types.FunctionType) -> types.FunctionType:
    """``function`` with a code object of its own. torch.compile keeps its graphs per code
    object, at most a few (8) before falling back to eager: one code object per (runner,
    width) holds exactly one graph, however many runners and widths a process uses."""
    return types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


class CapturedForward:
    """A static cache of ``capacity`` entries for ``decoder`` and a compiled forward per width
    (compiled on its first use). Used by one call at a time
    (:class:`specvlm.capture.pool.CapturePool` hands it out; on a GPU, to the thread that
    captured it: CUDA graphs belong to their thread's graph-tree manager)."""

    def __init__(
        self, decoder: nn.Module, head: nn.Module, embed: nn.Module, capacity: int, role: str
    ):
        self.decoder, self.head, self.embed = decoder, head, embed
        self.role = role
        self.capacity = capacity
        self.device = next(decoder.parameters()).device
        self.dtype = embed.weight.dtype
        self.cache = new_static_cache(decoder.config, capacity)
        self._cache_name = cache_argument_name(decoder)
        self._filled = torch.zeros((), dtype=torch.long, device=self.device)
        self._compiled: dict[int, object] = {}
        self.eager_widths: dict[int, str] = {}  # width -> why its compiled forward was dropped
        self.notes: list[str] = []  # what the captured forwards do not do (one line each)
        self.last_used = 0.0  # time.monotonic() when last given back to its pool

    @property
    def widths(self) -> tuple[int, ...]:
        """The widths compiled so far."""
        return tuple(sorted(self._compiled))

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in static_cache_tensors(self.cache))

    def __call__(self, ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor, filled):
        """Logits ``[1, width, V]`` of the ``[1, width]`` ids written after ``filled`` cache
        entries. A width whose compiled forward later fails (a recompile the graph cannot take:
        a guard that changed, dynamo's recompile limit) runs eager over the same static cache
        from then on, and :attr:`eager_widths` says why: slower, never wrong."""
        width = ids.shape[1]
        self._filled.fill_(filled)
        step = self._compiled.get(width)
        if step is None:
            if width in self.eager_widths:
                return self._eager(ids, position_ids, mask)
            return self._first_call(ids, position_ids, mask)
        try:
            return self._run(step, ids, position_ids, mask)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            del self._compiled[width]
            self.eager_widths[width] = _one_line(error)
            return self._eager(ids, position_ids, mask)

    def _run(self, step, ids, position_ids, mask) -> torch.Tensor:
        decoder, head, embed, cache, name = (
            self.decoder,
            self.head,
            self.embed,
            self.cache,
            self._cache_name,
        )
        logits = step(
            decoder, head, embed, cache, name, ids, position_ids, mask, self._filled, self.device
        )
        # a CUDA graph's output lives in its memory pool, overwritten by the next replay
        return logits.clone() if self.device.type == "cuda" else logits

    def _eager(self, ids, position_ids, mask) -> torch.Tensor:
        return _step(
            self.decoder,
            self.head,
            self.embed,
            self.cache,
            self._cache_name,
            ids,
            position_ids,
            mask,
            self._filled,
            self.device,
        )

    def _first_call(self, ids, position_ids, mask):
        width = ids.shape[1]
        inductor = COMPILE_BACKEND == "inductor"
        mode = "reduce-overhead" if self.device.type == "cuda" and inductor else None
        step = torch.compile(
            _own_code_copy(_step), backend=COMPILE_BACKEND, dynamic=False, fullgraph=True, mode=mode
        )
        try:
            logits = self._run(step, ids, position_ids, mask)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            raise CaptureFailed(
                f"the {self.role}'s forward of width {width} could not be captured "
                f"({_one_line(error)})",
                self.role,
            ) from error
        self._compiled[width] = step
        return logits


def _one_line(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:200]}"
