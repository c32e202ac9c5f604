"""The draft's own thread for overlapped drafting (:mod:`specvlm.overlap`): :class:`DraftWorker`
and the per-caller-thread workers of one decoder (:class:`DraftWorkers`).

All of a call's draft work after its decoder prefill runs on the worker: the captured steps'
adoption (warm-up, graph recording), every drafting step (looked ahead or not). On a GPU,
captured steps are kept per calling thread (:mod:`specvlm.capture.pool`) and CUDA graph trees
belong to the thread that recorded them, so each calling thread has one worker, kept for its
later calls: graphs recorded on it are replayed on it. On a CPU a worker lives for one call.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CallerState:
    """The caller's thread-local torch state a job must run under: inference mode, autocast
    (for the draft's device type), the current stream on the draft's device."""

    inference: bool
    autocast: tuple[bool, torch.dtype] | None
    stream: object | None  # torch.cuda.Stream, on a CUDA draft

    @classmethod
    def capture(cls, device: torch.device) -> CallerState:
        kind = device.type
        autocast = None
        if torch.is_autocast_enabled(kind):
            autocast = (True, torch.get_autocast_dtype(kind))
        stream = torch.cuda.current_stream(device) if kind == "cuda" else None
        return cls(torch.is_inference_mode_enabled(), autocast, stream)

    def enter(self, stack: ExitStack, device: torch.device) -> None:
        stack.enter_context(torch.no_grad())
        if self.inference:
            stack.enter_context(torch.inference_mode())
        if self.autocast is not None:
            stack.enter_context(torch.autocast(device.type, dtype=self.autocast[1]))
        if device.type == "cuda":
            stack.enter_context(torch.cuda.device(device))


class DraftWorker:
    """One thread for the draft's work; with ``own_stream`` (a CUDA draft on a device the
    target does not use), one stream.

    A job runs in a copy of the caller's context (attention plans are context variables) and
    under the caller's thread-local state (:class:`CallerState`). On its own stream it starts
    after everything the caller had queued on the draft's device (an event), and the caller's
    stream waits for the job's closing event before the caller uses the result: no host
    synchronisation. Without one it runs on the caller's current stream: its kernels queue with
    the caller's, and only the host work (Python, launches) overlaps. Why a stream only on a
    device of the draft's own: memory a job frees goes back to the stream it was allocated on,
    and on a device the caller is using at the same time (the target's verification) the
    caller could reuse it while the job's kernels still read it."""

    def __init__(self, device: torch.device, own_stream: bool):
        self.device = device
        self.own_stream = own_stream and device.type == "cuda"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specvlm-draft")
        self._stream = torch.cuda.Stream(device) if self.own_stream else None
        # the thread ends when the worker is dropped (its caller thread ended)
        weakref.finalize(self, self._pool.shutdown, False)

    def submit(self, fn: Callable, *args) -> Future:
        state = CallerState.capture(self.device)
        ready = state.stream.record_event() if self._stream is not None else None
        return self._pool.submit(contextvars.copy_context().run, self._job, state, ready, fn, args)

    def result(self, job: Future):
        """The job's value, once it is done (its exception, raised here, if it failed)."""
        value, done = job.result()
        if done is not None:
            torch.cuda.current_stream(self.device).wait_event(done)
        return value

    def call(self, fn: Callable, *args):
        """``fn(*args)`` on the worker, waited for."""
        return self.result(self.submit(fn, *args))

    def _job(self, state: CallerState, ready, fn: Callable, args: tuple):
        with ExitStack() as stack:
            state.enter(stack, self.device)
            stream = self._stream or state.stream
            if stream is not None:
                stack.enter_context(torch.cuda.stream(stream))
            if ready is not None:
                stream.wait_event(ready)
            value = fn(*args)
            done = stream.record_event() if self._stream is not None else None
        return value, done

    def drain(self) -> None:
        """Wait until every job submitted so far has finished, on the host and (own stream)
        on the device before the caller's later work."""
        self._pool.submit(lambda: None).result()
        if self._stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self._stream)

    def close(self) -> None:
        """Finish every job and end the thread."""
        self._pool.shutdown(wait=True)


class DraftWorkers:
    """The draft workers of one decoder. A CUDA draft: one per calling thread, kept for that
    thread's later calls (its graphs are replayed by the thread that recorded them), its
    thread ending with its caller's. A CPU draft: a new one per call, ended with the call (a
    thread kept alive beside the caller slowed the caller's own later forwards by half on a
    2-core CPU: its OpenMP team stays)."""

    def __init__(self):
        self._local = threading.local()

    @contextmanager
    def for_draft(self, device: torch.device, own_stream: bool) -> Iterator[DraftWorker]:
        """The worker for this call; every job it was given has finished on the way out."""
        if device.type != "cuda":
            worker = DraftWorker(device, own_stream=False)
            try:
                yield worker
            finally:
                worker.close()
            return
        worker = getattr(self._local, "worker", None)
        if worker is None or worker.device != device or worker.own_stream != own_stream:
            worker = self._local.worker = DraftWorker(device, own_stream)
        try:
            yield worker
        finally:
            worker.drain()
