#!/usr/bin/env bash
# Set up the environment, then run the whole test suite and the benchmarks as smoke tests.
# Extra arguments go to pytest.
set -euo pipefail
. "$(dirname "$0")/env.sh"
# Without a GPU, the Triton kernels run under the interpreter (set before they are defined).
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    export TRITON_INTERPRET=1
fi
python -m pytest tests bench --benchmark-disable -q "$@"
