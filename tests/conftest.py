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
