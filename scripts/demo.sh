#!/usr/bin/env bash
# The main job: set up the environment, then run `specvlm demo` on the embedded micro pair: a
# generated clip, a question, the target alone vs SpecVLM (draft on 10% of the video tokens).
# Extra arguments go to `specvlm demo` (see `specvlm demo --help`).
set -euo pipefail
. "$(dirname "$0")/env.sh"
specvlm demo "$@"
