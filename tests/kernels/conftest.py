"""Kernel tests on a CUDA machine.

There the kernels are compiled (the root conftest sets ``TRITON_INTERPRET`` only without CUDA,
and Triton decides interpreted or compiled once, when a kernel is defined), so a test that would
launch them on CPU tensors, the interpreter's job, is skipped with that reason instead of
failing; its ``gpu`` twin (the ``device`` fixture's CUDA half, or a ``gpu`` test) runs compiled.
"""

from __future__ import annotations

import pytest
import torch
import triton

INTERPRETER_ONLY = (
    "launches the Triton kernels on CPU tensors (the interpreter's job); on a CUDA machine they "
    "are compiled: run the CPU tests where there is no CUDA device"
)


@pytest.fixture(autouse=True)
def _cpu_launches_need_the_interpreter(request, monkeypatch):
    if not torch.cuda.is_available() or "gpu" in request.keywords:
        return
    compiled_run = triton.runtime.jit.JITFunction.run

    def run(self, *args, **kwargs):
        if any(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in args):
            pytest.skip(INTERPRETER_ONLY)
        return compiled_run(self, *args, **kwargs)

    monkeypatch.setattr(triton.runtime.jit.JITFunction, "run", run)
