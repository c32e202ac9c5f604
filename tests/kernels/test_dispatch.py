"""specvlm_kernels._dispatch: which backend runs a call."""

import torch

from specvlm_kernels._dispatch import REFERENCE, TRITON, backend_for


def test_cpu_uses_interpreter_only_when_enabled(monkeypatch):
    monkeypatch.delenv("SPECVLM_KERNELS_BACKEND", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend_for(torch.device("cpu")) == TRITON
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert backend_for(torch.device("cpu")) == REFERENCE
    monkeypatch.delenv("TRITON_INTERPRET")
    assert backend_for(torch.device("cpu")) == REFERENCE


def test_cuda_device_runs_triton(monkeypatch):
    monkeypatch.delenv("SPECVLM_KERNELS_BACKEND", raising=False)
    assert backend_for(torch.device("cuda", 0)) == TRITON


def test_other_devices_use_reference(monkeypatch):
    monkeypatch.delenv("SPECVLM_KERNELS_BACKEND", raising=False)
    assert backend_for(torch.device("meta")) == REFERENCE


def test_reference_can_be_forced(monkeypatch):
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend_for(torch.device("cpu")) == REFERENCE
    assert backend_for(torch.device("cuda")) == REFERENCE
