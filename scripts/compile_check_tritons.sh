#!/usr/bin/env bash
# The compile check (bench/compile_check.py: every kernel launch at the real-model shapes,
# compiled for sm_80 and sm_90 through each Triton's own make_cubin and ptxas, zero spills
# required) under each supported Triton. Each version is installed once, alone, into
# .triton/<version> (pip --target --no-deps, about 150-300 MB each) and put in front of .venv's
# own Triton with PYTHONPATH. No GPU needed.
#
#   bash scripts/compile_check_tritons.sh                 # 3.6.0 3.7.1 3.8.0 3.9.0
#   bash scripts/compile_check_tritons.sh 3.7.1 3.8.0     # some (CI: the test suites already
#                                                         # run it under 3.9.0 and 3.6.0)
#   DOCS=1 bash scripts/compile_check_tritons.sh          # also write docs/kernels.md's tables
set -euo pipefail
. "$(dirname "$0")/env.sh"
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.6.0 3.7.1 3.8.0 3.9.0)
for version in "${versions[@]}"; do
    dir=.triton/$version
    if [ ! -f "$dir/.specvlm-ready" ]; then
        rm -rf "$dir"
        python -m pip install --quiet --no-deps --target "$dir" "triton==$version"
        touch "$dir/.specvlm-ready"
    fi
    args=()
    [ "${DOCS:-0}" = 1 ] && args=(--docs docs/kernels.md)
    env -u TRITON_INTERPRET PYTHONPATH="$PWD/$dir:$PWD" python bench/compile_check.py "${args[@]}"
done
