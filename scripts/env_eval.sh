#!/usr/bin/env bash
# Makes (once) .venv-eval, the environment of SpecVLM inside lmms-eval (scripts/test_eval.sh), as
# docs/eval.md tells a user on a CPU machine: torch from the local CPU wheel first, then
# "specvlm[eval]" and pytest with torch held at that version. lmms-eval pulls torchvision 0.28,
# whose PyPI wheel cannot load beside the CPU torch; nothing is removed: scripts/test_eval.sh
# hides it as `specvlm serve` does (SPECVLM_HIDE_PACKAGES), and lmms-eval's CLI and transformers
# take their paths for a missing torchvision. About 2.4 GB and 2 minutes (no CUDA build: a torch
# 2.11 + torchvision 0.26 environment took 6.3 GB and filled a CI machine's disk). Reused until
# pyproject.toml or this file changes. Safe to run twice at once (CI starts it in the background;
# the second waits for the first). Exit code 3 when it cannot be installed (no package index).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-eval
READY=$VENV/.specvlm-ready
EVAL_TORCH=torch==2.13.0
exec 9>".venv-eval.lock"
flock 9
if [ -f "$READY" ] && [ ! pyproject.toml -nt "$READY" ] && [ ! scripts/env_eval.sh -nt "$READY" ]; then
    exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
if ! { "$VENV/bin/python" -m pip install --quiet "$EVAL_TORCH" &&
    "$VENV/bin/python" -m pip install --quiet -e ".[eval]" "$EVAL_TORCH" \
        "pytest>=8"; }; then
    echo "scripts/env_eval.sh: installing lmms-eval failed (see pip's message above)" >&2
    exit 3
fi
touch "$READY"
