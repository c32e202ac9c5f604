#!/usr/bin/env bash
# Set up the environment, then run the whole test suite and the benchmarks as smoke tests.
# Extra arguments go to pytest.
set -euo pipefail
. "$(dirname "$0")/env.sh"
python -m pytest tests bench --benchmark-disable -q "$@"
