#!/usr/bin/env bash
# One command for the first run on a CUDA machine without network (Python with torch, Triton and
# transformers already installed, the repository copied in): the GPU tests, the kernel benches at
# real shapes (eager calls, and CUDA-graph replays of the launch-bound ops) beside their analytic
# H100 expectations, the embedded pair end to end, per-forward costs of real-config decoders fed
# to the performance model; one results folder and one page (REPORT.md, rewritten after every
# step). One deadline: 8 minutes on a GPU from this script's start, every step capped and
# stopped at its cap (specvlm/tools/gpu_report/budget.py). `--tiny` runs the same steps on the
# CPU with small shapes (CI).
#
#   bash scripts/gpu_report.sh [--out DIR] [--tiny] [--skip step,step]
#
# Uses $PYTHON (default python3) as it is: no virtual environment, nothing installed.
set -euo pipefail
SPECVLM_REPORT_T0="$(date +%s.%N 2>/dev/null || date +%s)"
export SPECVLM_REPORT_T0
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m specvlm.tools.gpu_report "$@"
