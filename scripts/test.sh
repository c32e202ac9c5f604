#!/usr/bin/env bash
# Set up the environment, then run the whole test suite and the benchmarks as smoke tests, then
# the vLLM plugin's end-to-end tests (scripts/test_vllm.sh) and SpecVLM inside lmms-eval's CLI
# (scripts/test_eval.sh). Extra arguments go to every pytest run.
set -euo pipefail
. "$(dirname "$0")/env.sh"
# Without a GPU, the Triton kernels run under the interpreter (set before they are defined).
# With one they must run compiled: an inherited TRITON_INTERPRET is dropped.
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [ -n "${TRITON_INTERPRET:-}" ]; then
        echo "scripts/test.sh: CUDA present: unsetting TRITON_INTERPRET (kernels run compiled)" >&2
        unset TRITON_INTERPRET
    fi
else
    export TRITON_INTERPRET=1
fi
python -m pytest tests bench --benchmark-disable -q "$@"
# The vLLM plugin end to end, in its own environment (.venv-vllm; docs/serving.md).
bash "$(dirname "$0")/test_vllm.sh" "$@"
# SpecVLM as an lmms-eval model, in its own environment (.venv-eval; docs/eval.md).
bash "$(dirname "$0")/test_eval.sh" "$@"
