# Sourced by the other scripts: makes (once) and activates the project's virtual environment.
#
# * Reuses .venv when it exists; otherwise creates it with --system-site-packages, so a machine
#   that already has a (CUDA) PyTorch keeps it.
# * Without a usable torch and without an NVIDIA driver, installs the CPU build first
#   (`pip install torch==2.13.0`), so pip does not pull the multi-GB CUDA build.
# * Installs the project in editable mode with the test/bench extras.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv --system-site-packages .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        python -m pip install --quiet torch
    else
        python -m pip install --quiet torch==2.13.0
    fi
fi
if ! python -c "import specvlm, specvlm_kernels, pytest_benchmark, hypothesis, matplotlib, av" \
        >/dev/null 2>&1; then
    python -m pip install --quiet -e ".[dev]"
fi
# Without a GPU, Triton kernels run under the interpreter (must be set before they are defined).
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    export TRITON_INTERPRET=1
fi
