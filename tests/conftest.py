"""Fixtures shared by the orchestration tests (the kernel set-up is in the root conftest.py)."""

from __future__ import annotations

import pytest

from tests import tiny_models as tm


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are far faster on one intra-op thread (see tests/tiny_models.py)."""
    with tm.single_threaded():
        yield


@pytest.fixture
def reference_kernels(monkeypatch):
    """The kernels' PyTorch references inside the loop (their own tests run the Triton kernels;
    the interpreter's bf16 arithmetic is not the GPU's)."""
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")


@pytest.fixture
def accelerate_calls(monkeypatch):
    """The keyword arguments of every ``specvlm.accelerate`` call the test makes (the calls
    go through)."""
    import specvlm

    calls: list[dict] = []
    real = specvlm.accelerate

    def spy(models, **kwargs):
        calls.append(kwargs)
        return real(models, **kwargs)

    monkeypatch.setattr(specvlm, "accelerate", spy)
    return calls


@pytest.fixture
def traced_capture(monkeypatch):
    """Captured steps compiled with the ``aot_eager`` backend: the same dynamo trace (graph,
    guards, mutations of the static cache) without inductor's code generation, for tests of
    the logic around it; a few tests keep inductor (tests/test_capture.py)."""
    from specvlm.capture import runner

    monkeypatch.setattr(runner, "COMPILE_BACKEND", "aot_eager")
