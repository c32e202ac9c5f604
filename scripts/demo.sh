#!/usr/bin/env bash
# The main job: set up the environment, then run `specvlm selfcheck` (every kernel against its
# PyTorch reference, with timings). Extra arguments go to `specvlm selfcheck`.
set -euo pipefail
. "$(dirname "$0")/env.sh"
specvlm selfcheck "$@"
