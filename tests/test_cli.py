"""`specvlm selfcheck`, the README's first command for now."""

import os
import subprocess
import sys

import pytest

from specvlm.tools.cli import main


def _run(*args):
    # TRITON_INTERPRET removed, as in a fresh shell: the CLI itself must set it on a CPU before
    # the kernels are defined (setting it here hid a CLI that imported them too early)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-m", "specvlm.tools.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_selfcheck_passes_on_cpu_with_the_interpreter():
    """Also the check that ``specvlm selfcheck`` on a CPU, without TRITON_INTERPRET in the
    environment, exits 0 (it crashed with "0 active drivers" when the CLI imported the kernels
    before choosing their backend)."""
    proc = _run("selfcheck", "--device", "cpu", "--repeats", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backend triton (interpreter)" in proc.stdout
    for op in ("video_attention_scores", "tree_attention", "prune_video_tokens"):
        assert proc.stdout.count(op) == 2  # fp32 and fp16 rows
    assert "all kernels match their references" in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["selfcheck", "--device", "nonsense"], "bad --device"),
        (["selfcheck", "--device", "cpu", "--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_selfcheck_bad_arguments(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_selfcheck_cuda_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["selfcheck", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
