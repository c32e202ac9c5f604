"""The ``--worker-cls`` seam: the platform's own vLLM worker, plus what the proposer needs.

vLLM's ``custom_class`` contract hands the proposer neither request ids, nor the requests'
multimodal inputs, nor the end of a prefill, nor finished requests. The worker has all of them:
:class:`SpecVLMWorker` is the platform's worker class (CPU or GPU, chosen when vLLM builds it)
with three additions: after the model is loaded it gives the proposer the model runner
(:meth:`~specvlm.vllm_plugin.proposer.SpecVLMProposer.attach`); before each step it passes the
scheduler output on (:meth:`~specvlm.vllm_plugin.proposer.SpecVLMProposer.begin_step`: finished
and aborted requests are released, prompt chunks located for the scorer); after each forward it
has the scorer sum the scores completed in it over the tensor-parallel ranks; and
``llm.collective_rpc("specvlm_stats")`` reports the proposer's counters.
"""

from __future__ import annotations

import os


def _platform_worker():
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        from vllm.v1.worker.cpu_worker import CPUWorker

        return CPUWorker
    if current_platform.is_cuda_alike():
        from vllm.v1.worker.gpu_worker import Worker

        return Worker
    raise RuntimeError(
        f"specvlm.vllm_plugin supports vLLM's CPU and CUDA workers, not {current_platform}"
    )


class _SpecVLMMixin:
    def load_model(self, *args, **kwargs):
        result = super().load_model(*args, **kwargs)
        drafter = self._specvlm_drafter()
        if drafter is not None:
            drafter.attach(self.model_runner)
        return result

    def execute_model(self, scheduler_output, *args, **kwargs):
        drafter = self._specvlm_drafter()
        if drafter is not None:
            drafter.begin_step(scheduler_output)
        try:
            result = super().execute_model(scheduler_output, *args, **kwargs)
        finally:
            if drafter is not None:
                drafter.scorer.end_step()  # the forward is over: nothing more to locate
        if drafter is not None:
            # the scores completed in this forward, summed over the tensor-parallel ranks (every
            # rank runs this step; a forward that raised makes no collective)
            drafter.scorer.reduce_completed()
        return result

    def specvlm_stats(self) -> dict:
        """The proposer's counters, the requests it holds state for, its batched draft cache's
        size (slots, capacity, live slots, growths) and this worker's pid."""
        drafter = self._specvlm_drafter()
        if drafter is None:
            return {}
        stats = dict(vars(drafter.stats), kept=dict(drafter.stats.kept))  # a snapshot
        caches = drafter.caches
        store = dict(
            slots=caches.slots, capacity=caches.capacity, live=caches.live, growths=caches.growths
        )
        return dict(stats, live_states=drafter.live_states(), draft_cache=store, pid=os.getpid())

    def _specvlm_drafter(self):
        from specvlm.vllm_plugin.proposer import SpecVLMProposer

        drafter = getattr(getattr(self, "model_runner", None), "drafter", None)
        return drafter if isinstance(drafter, SpecVLMProposer) else None


class SpecVLMWorker:
    """Builds the platform's worker with the SpecVLM additions (vLLM resolves ``--worker-cls``
    by name and calls it with the worker's keyword arguments)."""

    _classes: dict = {}

    def __new__(cls, *args, **kwargs):
        from specvlm.vllm_plugin.compat import check_vllm_version

        check_vllm_version()
        base = _platform_worker()
        worker_cls = cls._classes.get(base)
        if worker_cls is None:
            worker_cls = cls._classes[base] = type(
                f"SpecVLM{base.__name__}", (_SpecVLMMixin, base), {}
            )
        return worker_cls(*args, **kwargs)
