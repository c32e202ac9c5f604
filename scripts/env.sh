# Sourced by the other scripts: makes (once) and activates the project's virtual environment.
#
# * Reuses .venv when it exists; otherwise creates it with --system-site-packages, so a machine
#   that already has a (CUDA) PyTorch keeps it.
# * Without a usable torch and without an NVIDIA driver, installs the CPU build first
#   (`pip install torch==2.13.0`), so pip does not pull the multi-GB CUDA build.
# * Installs the project in editable mode with the test/bench extras.
# * Once all that is checked, .venv/.specvlm-ready records it: later runs skip the checks (a
#   few seconds of imports) until pyproject.toml or this file changes. Remove the file to make
#   the next run check again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv --system-site-packages .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
READY=.venv/.specvlm-ready
if [ ! -f "$READY" ] || [ pyproject.toml -nt "$READY" ] || [ scripts/env.sh -nt "$READY" ]; then
    if ! python -c "import torch" >/dev/null 2>&1; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
            python -m pip install --quiet torch
        else
            python -m pip install --quiet torch==2.13.0
        fi
    fi
    if ! python -c "import specvlm, specvlm_kernels, pytest_benchmark, hypothesis, matplotlib, av, pyarrow" \
            >/dev/null 2>&1; then
        python -m pip install --quiet -e ".[dev]"
    fi
    touch "$READY"
fi
# TRITON_INTERPRET is left to the caller: scripts/test.sh sets it on CPU-only machines (the tests
# run the Triton kernels under the interpreter there); the demo leaves it unset, so on a CPU the
# kernels' PyTorch references run (the interpreter is far too slow for a live demo).
