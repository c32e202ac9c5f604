"""The target's text-to-video attention, measured inside vLLM's prefill.

Each decoder attention layer's ``impl.forward`` (the attention backend's, which receives the
post-RoPE queries and keys of every scheduled token) is wrapped on its instance: the wrapper
calls the original, then, for the requests whose prompt is being prefilled and still needs
scores, keeps the prompt's keys and the queries of the text after the video. When a request's
last prompt chunk has gone through a layer, that layer's attention of the text rows to the video
keys is added into the request's fp32 buffer by :func:`specvlm_kernels.video_attention_scores`
(the Triton kernel on GPU, its PyTorch reference on CPU), exactly the score ``accelerate`` uses.
Nothing is stored for requests that need no scores, and a step with none costs one dict lookup
per layer.

Which flat batch rows belong to which request comes from the step's scheduler output (the worker
hands it over before the forward) and the runner's batch order, not from backend-specific
attention metadata, so the same code serves every attention backend.

Under tensor parallelism each rank's wrapper sees only its shard of the heads, so each rank's
buffer is the mean over its ``Hq / TP`` heads. After each forward (:meth:`PrefillScorer.
reduce_completed`, which the worker calls) the buffers of the requests whose scores completed in
that step are summed over the tensor-parallel group in one collective
(:func:`all_reduce_scores`) and divided by the group's size: every rank then holds the mean over
all heads, and every rank prunes alike.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import torch

from specvlm.families import VideoLayout
from specvlm_kernels import video_attention_scores

logger = logging.getLogger(__name__)


@dataclass
class PendingScores:
    """One request's scores while its prompt is prefilled."""

    layout: VideoLayout
    prompt_len: int
    buffer: torch.Tensor | None = None  # fp32 [1, span]: summed over the layers done
    keys: dict = field(default_factory=dict)  # layer -> [chunks of [n, Hk, D]]
    queries: dict = field(default_factory=dict)  # layer -> [chunks of [n, Hq, D]]
    layers_done: int = 0
    scorable: bool = True  # False: the video's keys cannot all be seen (see PrefillScorer)
    origin: int | None = None  # absolute position of the first key kept (> 0: prefix cached)
    expected: int | None = None  # the absolute position the next chunk must start at

    def grid_scores(self, layers: int) -> torch.Tensor | None:
        """fp32 ``[T*H*W]`` on the CPU: the scores of the grid tokens, or None where they were
        not measured in each of the ``layers`` layers."""
        if not self.scorable or self.buffer is None or self.layers_done != layers:
            return None
        start = self.layout.span[0]
        return self.buffer[0, (self.layout.positions - start).to(self.buffer.device)].cpu()

    def forget(self) -> None:
        """Drop what was kept (the prefill restarts, or cannot be scored)."""
        self.keys.clear()
        self.queries.clear()
        self.buffer = None
        self.layers_done = 0
        self.origin = self.expected = None


@dataclass(frozen=True)
class _Chunk:
    rows: tuple[int, int]  # [a, b) in the flat batch
    first: int  # absolute position of row a


class PrefillScorer:
    """Wraps the attention layers of one vLLM model runner; see the module docstring.

    ``needs_scores(req_id)``: called once for each request the scorer has not seen, when its
    first prompt chunk is scheduled; returns ``(layout, prompt_len)`` to measure its scores, or
    None."""

    def __init__(self, needs_scores):
        self.needs_scores = needs_scores
        self.pending: dict[str, PendingScores] = {}
        self.seen: set[str] = set()
        self.runner = None
        self.layers = 0
        self._scheduled: dict = {}
        self._chunks: dict[str, _Chunk] | None = {}
        self.group = None  # the tensor-parallel group (vLLM's GroupCoordinator); None: one rank
        self._completed: list[str] = []  # requests whose scores completed in this step

    # ---------------------------------------------------------------- set-up
    def install(self, runner, attention_layers: dict) -> None:
        """Wrap ``impl.forward`` of every decoder attention layer (``{name: layer}``)."""
        self.runner = runner
        for name, layer in attention_layers.items():
            impl = getattr(layer, "impl", None)
            if impl is None or getattr(impl, "_specvlm_wrapped", False):
                continue
            impl.forward = functools.partial(self._forward, impl.forward, name)
            impl._specvlm_wrapped = True
            self.layers += 1
        if self.layers == 0:
            raise RuntimeError("specvlm.vllm_plugin found no attention layer to score the video")

    # ---------------------------------------------------------------- per request
    def take(self, req_id: str) -> PendingScores | None:
        """The request's measured scores (and forget them)."""
        return self.pending.pop(req_id, None)

    def release(self, req_id: str) -> None:
        self.pending.pop(req_id, None)
        self.seen.discard(req_id)

    # ---------------------------------------------------------------- per step
    def begin_step(self, scheduled: dict, has_new: bool) -> None:
        """Before a forward: ``scheduled[r]`` tokens are scheduled for request ``r``. The rows of
        the pending requests are located at the step's first attention call (the runner's batch
        is up to date by then); nothing at all happens when no request needs scores."""
        self._scheduled = scheduled
        self._chunks = None if (has_new or self.pending) else {}

    def end_step(self) -> None:
        """After the forward (the worker calls it): nothing to locate until the next step."""
        self._chunks = {}

    def reduce_completed(self) -> None:
        """After a forward that ran (the worker calls it on every rank): the scores completed in
        it, summed over the tensor-parallel group, before any rank prunes with them.

        Every rank reaches the collective in the same order, or none does: ranks run the same
        schedule (the same scheduler output, the same runner batch order, the same number of
        wrapped layers), so the same requests complete their prefill in the same step on every
        rank, and their buffers (same lengths: the same layouts) are reduced in one collective
        per step, in sorted request-id order, after a check that every rank holds as many
        (:func:`all_reduce_scores`: where a rank gave up on a request, the ranks skip the
        reduction instead of hanging). Under tensor parallelism the check runs every step."""
        done, self._completed = sorted(set(self._completed)), []
        states = [self.pending.get(rid) for rid in done]
        states = [s for s in states if s is not None and s.buffer is not None]
        # the buffers are inference tensors (made in the forward): new ones replace them
        with torch.inference_mode():
            reduced = all_reduce_scores([s.buffer for s in states], self.group)
        for state, buffer in zip(states, reduced, strict=True):
            state.buffer = buffer

    def _locate(self) -> dict[str, _Chunk]:
        runner, chunks, offset = self.runner, {}, 0
        for rid in runner.input_batch.req_ids:
            n = int(self._scheduled.get(rid, 0))
            if n == 0:
                continue
            if rid not in self.seen:
                self.seen.add(rid)
                wanted = self.needs_scores(rid)
                if wanted is not None:
                    self.pending[rid] = PendingScores(*wanted)
            state = self.pending.get(rid)
            request = runner.requests.get(rid)
            if state is not None and state.scorable and request is not None:
                first = int(request.num_computed_tokens)
                if first < state.prompt_len and self._follows(rid, state, first):
                    chunks[rid] = _Chunk((offset, offset + n), first)
            offset += n
        return chunks

    @staticmethod
    def _follows(rid: str, state: PendingScores, first: int) -> bool:
        """Whether a chunk starting at ``first`` continues what was kept (starting over where
        it restarts from a position before the video: preemption, or a prefix-cache hit)."""
        if state.expected is not None and first == state.expected:
            return True
        video_start = state.layout.span[0]
        if first <= video_start:
            # a new prefill: from 0, or after a cached prefix that ends before the video (its
            # keys never pass here: the rows' softmax then lacks those keys, a small
            # approximation that changes which tokens are kept, never the output)
            state.forget()
            state.origin = first
            return True
        state.forget()
        state.scorable = False
        logger.warning(
            "specvlm: request %s's video came from vLLM's prefix cache, so it was not scored "
            "in this prefill; its draft is pruned with the scores of the last request with the "
            "same video, or keeps a spread of the video tokens where there was none",
            rid,
        )
        return False

    # ---------------------------------------------------------------- the wrapper
    def _forward(self, original, name, layer, query, key, value, kv_cache, attn_metadata, *a, **kw):
        out = original(layer, query, key, value, kv_cache, attn_metadata, *a, **kw)
        if attn_metadata is not None and self._chunks != {}:
            if self._chunks is None:
                self._chunks = self._locate()
            if self._chunks:
                self._observe(name, layer, query, key)
        return out

    def _observe(self, name: str, layer, query: torch.Tensor, key: torch.Tensor) -> None:
        for rid, chunk in self._chunks.items():
            state = self.pending.get(rid)
            if state is None:
                continue
            a, b = chunk.rows
            q = _as_heads(query[a:b], layer)
            k = _as_heads(key[a:b], layer)
            end = min(chunk.first + (b - a), state.prompt_len)
            rows = end - chunk.first  # a chunk never runs past the prompt, but be safe
            state.expected = end
            state.keys.setdefault(name, []).append(k[:rows].clone())
            text_from = max(state.layout.text_start - chunk.first, 0)
            if text_from < rows:
                state.queries.setdefault(name, []).append(q[text_from:rows].clone())
            if end == state.prompt_len:
                self._score_layer(state, name, layer)
                if state.layers_done == self.layers:
                    self._completed.append(rid)

    def _score_layer(self, state: PendingScores, name: str, layer) -> None:
        keys = torch.cat(state.keys.pop(name))  # [L, Hk, D]
        chunks = state.queries.pop(name, [])
        state.layers_done += 1
        video_start, video_end = state.layout.span
        if not chunks or video_end <= video_start:
            return  # no text after the video: nothing to score (Stage I selects nothing)
        queries = torch.cat(chunks)  # [Lq, Hq, D]
        if state.buffer is None:
            state.buffer = torch.zeros(
                1, video_end - video_start, dtype=torch.float32, device=keys.device
            )
        origin = state.origin or 0  # keys[0] is this absolute position
        video_attention_scores(
            queries.transpose(0, 1)[None],
            keys.transpose(0, 1)[None],
            video_start - origin,
            video_end - origin,
            scale=float(layer.impl.scale),
            q_offset=state.layout.text_start - origin,
            out=state.buffer,
        )


def all_reduce_scores(buffers: list[torch.Tensor], group) -> list[torch.Tensor]:
    """Each fp32 score buffer's mean over the ranks of ``group`` (new tensors, the same shapes).

    ``group``: anything with ``world_size``, ``rank_in_group`` and ``all_reduce(tensor) ->
    tensor`` (a sum), such as vLLM's ``GroupCoordinator`` (``vllm.distributed.get_tp_group()``;
    its ``device``, else the CPU, carries the check below); None or a world of one rank: the
    buffers themselves, and no collective. Each rank's buffers hold the mean over its equal
    share of the heads, so the sum over ranks divided by the world size is the mean over all
    heads.

    Under tensor parallelism every rank calls this every step, buffers or not: first a check
    that all ranks hold the same number of elements (one collective of ``world_size`` numbers,
    each rank's count in its own place; fp32, exact below 2**24), then, where they agree and
    hold any, the buffers in one collective. Ranks that disagree (a rank gave up on a request,
    say) skip the second collective rather than hang in it, and each keeps its own heads'
    scores (only the pruning is affected: vLLM verifies every drafted token)."""
    if group is None or group.world_size == 1:
        return list(buffers)
    n = sum(b.numel() for b in buffers)
    device = buffers[0].device if buffers else getattr(group, "device", torch.device("cpu"))
    counts = torch.zeros(group.world_size, dtype=torch.float32, device=device)
    counts[group.rank_in_group] = n
    counts = group.all_reduce(counts).cpu()
    if not bool((counts == counts[0]).all()):
        logger.warning(
            "specvlm: tensor-parallel ranks hold different score buffers this step (%d elements "
            "here); each rank prunes with its own heads' scores",
            n,
        )
        return list(buffers)
    if not buffers:
        return []
    flat = torch.cat([b.reshape(-1) for b in buffers])
    summed = group.all_reduce(flat) / group.world_size
    sizes = [b.numel() for b in buffers]
    return [part.view_as(b) for part, b in zip(torch.split(summed, sizes), buffers, strict=True)]


def _as_heads(x: torch.Tensor, layer) -> torch.Tensor:
    """``[n, H, D]`` from ``[n, H, D]`` or ``[n, H * D]`` (the layer's ``head_size``)."""
    return x if x.dim() == 3 else x.view(x.shape[0], -1, int(layer.head_size))
