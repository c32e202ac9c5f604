# Sourced by scripts/test_gpu_image.sh: makes (once) and activates .venv-gpu-image, an
# environment with the versions of the GPU machines' image (docs/design.md, "Supported
# versions"): Python 3.12 where this machine has it, torch 2.11.0 (its CUDA build: it runs on a
# CPU too), triton 3.6.0, transformers 5.17.0, the test tools that image has, and no PyAV. The
# project is not installed: it runs from the tree with PYTHONPATH=., as on a GPU machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GPU_IMAGE_PINS=(torch==2.11.0 triton==3.6.0 transformers==5.17.0)
# numpy < 2.4 on the CPU only: Triton 3.6's interpreter turns one-element arrays into ints,
# which numpy 2.4 and later refuse (the GPU image has numpy 2.5 and runs the kernels compiled).
GPU_IMAGE_TOOLS=(pytest pytest-benchmark hypothesis matplotlib safetensors "numpy<2.4")
VENV=.venv-gpu-image
# The first Python that runs: $PYTHON_GPU_IMAGE, python3.12 (on PATH or under pyenv), python3.
gpu_image_python() {
    local candidate
    for candidate in ${PYTHON_GPU_IMAGE:-} python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 \
        python3; do
        if "$candidate" -c "import venv" >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
    echo "env_gpu_image.sh: no Python found" >&2
    return 1
}
if [ ! -x "$VENV/bin/python" ]; then
    "$(gpu_image_python)" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
[ "$(command -v python)" = "$PWD/$VENV/bin/python" ] || {
    echo "env_gpu_image.sh: $VENV did not activate" >&2
    exit 1
}
READY=$VENV/.specvlm-ready
if [ ! -f "$READY" ] || [ scripts/env_gpu_image.sh -nt "$READY" ]; then
    "$VENV/bin/python" -m pip install --quiet "${GPU_IMAGE_PINS[@]}" "${GPU_IMAGE_TOOLS[@]}"
    "$VENV/bin/python" - "${GPU_IMAGE_PINS[@]}" <<'PY'
import sys
from importlib.metadata import version

for pin in sys.argv[1:]:
    name, want = pin.split("==")
    have = version(name)
    if have.split("+")[0] != want:
        sys.exit(f"env_gpu_image.sh: {name} {have} installed, {want} wanted")
PY
    touch "$READY"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
