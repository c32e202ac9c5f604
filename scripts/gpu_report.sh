#!/usr/bin/env bash
# One command for the first run on a CUDA machine without network (Python with torch, Triton and
# transformers already installed, the repository copied in): the GPU tests, the kernel benches at
# real shapes beside their analytic H100 expectations, the embedded pair end to end, per-forward
# costs of real-config decoders fed to the performance model; one results folder and one page
# (REPORT.md), under 8 minutes. `--tiny` runs the same steps on the CPU with small shapes (CI).
#
#   bash scripts/gpu_report.sh [--out DIR] [--tiny] [--skip step,step]
#
# Uses $PYTHON (default python3) as it is: no virtual environment, nothing installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m specvlm.tools.gpu_report "$@"
