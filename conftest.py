"""Shared pytest set-up for tests/ and bench/.

Without a GPU, Triton kernels run under the interpreter: ``TRITON_INTERPRET`` must be set
before any ``@triton.jit`` function is defined, i.e. before ``specvlm_kernels`` is imported, so
it is set here, at conftest import time, and only when there is no CUDA device. With one, the
kernels must run compiled: an inherited ``TRITON_INTERPRET`` is removed (with a warning), and
every test marked ``gpu`` checks that the interpreter is off (the launchers also refuse to run
an interpreted kernel on a CUDA tensor). Tests marked ``gpu`` are skipped without CUDA.
"""

import os
import warnings

import pytest
import torch

_TRUE = ("1", "true", "yes", "on")

if torch.cuda.is_available():
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE:
        warnings.warn(
            "TRITON_INTERPRET is set on a CUDA machine: unset for the tests, so the GPU tests "
            "run the compiled kernels",
            stacklevel=1,
        )
        del os.environ["TRITON_INTERPRET"]
else:
    os.environ.setdefault("TRITON_INTERPRET", "1")

GPU = pytest.mark.gpu


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _gpu_tests_run_compiled(request):
    """A ``gpu`` test (or the CUDA half of the ``device`` fixture) never runs interpreted."""
    if "gpu" in request.keywords:
        interpreted = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE
        assert not interpreted, "a gpu test would run the Triton kernels under the interpreter"


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=GPU)])
def device(request):
    """Each kernel test runs on the CPU (interpreter) and, when present, on CUDA."""
    return torch.device(request.param)
