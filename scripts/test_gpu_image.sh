#!/usr/bin/env bash
# The test suite and the GPU report's CPU mode under the GPU machines' versions (Python 3.12,
# torch 2.11.0, triton 3.6.0, transformers 5.17.0, no PyAV; scripts/env_gpu_image.sh), with the
# project run from the tree as on a GPU machine: an API missing in those versions fails here,
# not on a scarce GPU machine. The vLLM plugin's tests run in their own environment
# (scripts/test_vllm.sh). Extra arguments go to pytest.
set -euo pipefail
. "$(dirname "$0")/env_gpu_image.sh"
python -c "import sys, torch, triton, transformers; print('GPU-image versions: Python', \
sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, \
'transformers', transformers.__version__)"
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    unset TRITON_INTERPRET
else
    export TRITON_INTERPRET=1
fi
# Triton 3.6's interpreter with numpy 2.3 warns on every one-element array it turns into an int.
# Left to the main environment: the README's commands (tests/test_readme.py: they build and run
# .venv, not this environment) and the vLLM plugin (its own .venv-vllm).
# Also left to the main environment: the two captured-step tests that are compile-bound and not
# version-sensitive (the policy's calibration on captured steps, the sampling law with them);
# the other captured-step tests run here, under torch 2.11's compiler.
python -m pytest tests bench --benchmark-disable -q -p no:cacheprovider \
    --ignore=tests/test_vllm_plugin.py --ignore=tests/test_readme.py \
    --deselect tests/test_capture.py::test_policy_chooses_by_the_captured_costs \
    --deselect tests/test_sampling_distribution.py::test_first_tokens_follow_the_target_with_captured_steps \
    -W ignore::DeprecationWarning "$@"
bash scripts/gpu_report.sh --tiny --out "${TMPDIR:-/tmp}/specvlm-gpu-report-tiny-gpu-image"
