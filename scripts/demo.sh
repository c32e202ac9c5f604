#!/usr/bin/env bash
# The main job: set up the environment, then run `specvlm demo` on the embedded micro pair: a
# generated 32-frame clip, a question, the target alone (eager and compiled), naive SD and SpecVLM
# with its automatic policy, side by side.
# Extra arguments go to `specvlm demo` (see `specvlm demo --help`).
set -euo pipefail
. "$(dirname "$0")/env.sh"
specvlm demo "$@"
