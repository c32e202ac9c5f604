#!/usr/bin/env bash
# Makes (once) .venv-eval, the environment of SpecVLM inside lmms-eval (scripts/test_eval.sh):
# lmms-eval needs a torchvision that loads, and no torchvision loads beside the main .venv's CPU
# torch 2.13, so this one has torch 2.11 with its torchvision 0.26 (the CUDA build from the
# package index; it runs on a CPU), then "specvlm[eval]" and pytest, as docs/eval.md tells a
# user. About 2 minutes; reused until pyproject.toml or this file changes. Safe to run twice at
# once (CI starts it in the background; the second waits for the first). Exit code 3 when it
# cannot be installed (no package index).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-eval
READY=$VENV/.specvlm-ready
EVAL_TORCH=(torch==2.11.0 torchvision==0.26.0)
exec 9>".venv-eval.lock"
flock 9
if [ -f "$READY" ] && [ ! pyproject.toml -nt "$READY" ] && [ ! scripts/env_eval.sh -nt "$READY" ]; then
    exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
if ! { "$VENV/bin/python" -m pip install --quiet "${EVAL_TORCH[@]}" &&
    "$VENV/bin/python" -m pip install --quiet -e ".[eval]" "pytest>=8"; }; then
    echo "scripts/env_eval.sh: installing lmms-eval failed (see pip's message above)" >&2
    exit 3
fi
touch "$READY"
