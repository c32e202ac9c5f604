#!/usr/bin/env bash
# SpecVLM inside lmms-eval (tests/test_lmms_eval.py: lmms-eval's own CLI with the `specvlm`
# model on a local task over the embedded clips, --include_path) in its own environment,
# .venv-eval (scripts/env_eval.sh: the CPU torch and "specvlm[eval]"; the torchvision lmms-eval
# pulls cannot load beside that torch and is hidden, in every Python process, as by `specvlm serve`).
# Where lmms-eval cannot be installed (no package index), the tests are skipped with that reason
# printed, unless SPECVLM_REQUIRE_LMMS_EVAL=1 (CI). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
bash scripts/env_eval.sh || status=$?
if [ "$status" = 3 ] && [ "${SPECVLM_REQUIRE_LMMS_EVAL:-0}" != 1 ]; then
    echo "scripts/test_eval.sh: SKIPPED the lmms-eval tests: lmms-eval could not be installed" \
        "here (see pip's message above)" >&2
    exit 0
fi
[ "$status" = 0 ] || exit "$status"
# the kernels' PyTorch references on the CPU, as in `specvlm demo`
unset TRITON_INTERPRET
# this environment has lmms-eval: its tests must run, not skip
export SPECVLM_LMMS_EVAL_ENV=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
SPECVLM_HIDE_PACKAGES=$(.venv-eval/bin/python -c \
    'from specvlm.tools.serve import unloadable_packages as u; print(",".join(u()))')
echo "scripts/test_eval.sh: hidden from the tests (cannot load here): ${SPECVLM_HIDE_PACKAGES:-none}"
if [ -n "$SPECVLM_HIDE_PACKAGES" ]; then
    export SPECVLM_HIDE_PACKAGES PYTHONPATH="$PWD/specvlm/vllm_plugin/site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec .venv-eval/bin/python -m pytest tests/test_lmms_eval.py -q -p no:cacheprovider "$@"
