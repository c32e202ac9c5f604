#!/usr/bin/env bash
# Set up the environment, then run the whole test suite and the benchmarks as smoke tests.
# Extra arguments go to pytest.
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
