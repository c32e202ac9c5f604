"""Shared pytest set-up for tests/ and bench/.

Without a GPU, Triton kernels run under the interpreter: ``TRITON_INTERPRET`` must be set
before any ``@triton.jit`` function is defined, i.e. before ``specvlm_kernels`` is imported, so
it is set here, at conftest import time. Tests marked ``gpu`` are skipped without CUDA.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

GPU = pytest.mark.gpu


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=GPU)])
def device(request):
    """Each kernel test runs on the CPU (interpreter) and, when present, on CUDA."""
    return torch.device(request.param)
