"""Step ``env``: the machine and the software versions (``env.json``), probed in a process of
its own (importing torch and initialising CUDA can hang on a broken machine)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path


def driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


def environment() -> dict:
    import torch
    import transformers
    import triton

    cuda = torch.cuda.is_available()
    env = {
        "cuda": cuda,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "cuda_runtime": torch.version.cuda,
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        "gpu": "none (CPU run)",
        "driver": "-",
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=torch.cuda.get_device_name(0),
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            driver=driver_version(),
        )
    return env


def run(out: Path, tiny: bool) -> tuple[str, list[str]]:
    env = environment()
    (out / "env.json").write_text(json.dumps(env, indent=2))
    return f"{env['gpu']}; torch {env['torch']}, Triton {env['triton']}", ["env.json"]
