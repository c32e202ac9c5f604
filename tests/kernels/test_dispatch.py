"""specvlm_kernels._dispatch: which backend runs a call, and the launch set-up."""

import pytest
import torch

from specvlm_kernels import _dispatch as dispatch
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


def test_triton_can_be_forced(monkeypatch):
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert backend_for(torch.device("meta")) == TRITON
    assert backend_for(torch.device("cpu")) == TRITON


# --------------------------------------------------------------------------------------------
# Launch set-up shared by the launchers
# --------------------------------------------------------------------------------------------
def test_gpu_config_for_cuda_and_meta_only():
    assert dispatch.gpu_config(torch.device("cuda", 3))
    assert dispatch.gpu_config(torch.device("meta"))
    assert not dispatch.gpu_config(torch.device("cpu"))


def test_device_guard_enters_the_inputs_cuda_device(monkeypatch):
    entered = []

    class Recorder:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", Recorder)
    with dispatch.device_guard(torch.device("cuda", 1)):
        pass
    assert entered == [torch.device("cuda", 1)]
    with dispatch.device_guard(torch.device("cpu")):  # no CUDA context for CPU tensors
        pass
    assert entered == [torch.device("cuda", 1)]


def test_a_cuda_launch_never_runs_interpreted():
    class InterpretedFunction:  # what triton.jit returns under TRITON_INTERPRET=1
        __name__ = "_some_kernel"

    fake = InterpretedFunction()
    assert dispatch.is_interpreted(fake)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        dispatch.check_compiled(fake, torch.device("cuda", 0))
    dispatch.check_compiled(fake, torch.device("cpu"))  # the CPU path is the interpreter


def test_value_checks_policy(monkeypatch):
    monkeypatch.delenv("SPECVLM_KERNELS_DEBUG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert dispatch.value_checks(torch.device("cpu"))  # free: no device sync
    assert not dispatch.value_checks(torch.device("cuda"))  # would sync: off by default
    assert not dispatch.value_checks(torch.device("meta"))
    monkeypatch.setenv("SPECVLM_KERNELS_DEBUG", "1")
    assert dispatch.value_checks(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not dispatch.value_checks(torch.device("cuda"))  # never inside a graph capture


def test_sm_count_cache(monkeypatch):
    monkeypatch.setitem(dispatch._SM_COUNT, ("cuda", 98), 7)
    assert dispatch.sm_count(torch.device("cuda", 98)) == 7
    assert dispatch.sm_count(torch.device("cpu")) == 2
    assert dispatch.sm_count(torch.device("meta")) == dispatch.META_SM_COUNT == 132


@pytest.mark.parametrize(
    "base,blocks,max_splits,expected",
    [
        (1, 1, 8, 1),  # one block: nothing to split
        (28, 1024, 64, 9),  # 252 programs: two nearly full waves over 132 SMs
        (8, 1024, 64, 16),  # 128 programs: one wave
        (64, 32, 64, 2),  # 128 programs of 16 blocks beat 64 of 32
        (448, 1024, 64, 5),  # 3.4 waves unsplit; 5 splits balance 17 waves better
        (4096, 64, 64, 1),  # already 31 waves: splitting only adds partials
        (4, 1024, 3, 3),  # capped
    ],
)
def test_waves_split(base, blocks, max_splits, expected):
    assert dispatch.waves_split(base, blocks, max_splits, 132) == expected


def test_waves_split_never_loses_to_no_split():
    def cost(base, blocks, s):
        return -(-base * s // 132) * (-(-blocks // s) + 2) + s / 16

    for base in (1, 3, 28, 64, 200, 1000):
        for blocks in (1, 7, 64, 1000):
            s = dispatch.waves_split(base, blocks, 64, 132)
            assert 1 <= s <= max(1, min(64, blocks))
            assert cost(base, blocks, s) <= cost(base, blocks, 1)


@pytest.mark.gpu
def test_cuda_kernels_are_compiled():
    """On a CUDA machine the kernels must be JIT-compiled, not interpreted (the conftest sets
    TRITON_INTERPRET only without CUDA): a CUDA launch compiles and caches a binary."""
    from specvlm_kernels import tree_attention as ta

    assert not dispatch.is_interpreted(ta._tree_attn_split_kernel)
    q = torch.randn(1, 2, 1, 16, device="cuda")
    k = torch.randn(1, 1, 40, 16, device="cuda")
    ta.tree_attention(q, k, k)
    caches = getattr(ta._tree_attn_split_kernel, "device_caches", None)
    if caches is not None:  # Triton >= 3.3: {device: (kernel_cache, ...)}
        assert any(len(entry[0]) > 0 for entry in caches.values())
