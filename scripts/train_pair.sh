#!/usr/bin/env bash
# Train the shipped micro pair from scratch (docs/micro.md#training): 81 minutes on the
# project's 2-core CPU, one run after another, each on both cores. Output: OUT/draft and
# OUT/target (the pair), OUT/stage-a/target and OUT/stage-b/target (the target at 1 and 4
# text layers).
#
#     bash scripts/train_pair.sh runs/micro
#     bash scripts/train_pair.sh /tmp/pair --tiny --steps 2   # the same runs on tiny models (tests)
#
# Arguments after OUT are added to every run of scripts/train_micro.py (later options win).
# Fixed seeds and step counts: the same clips and the same schedule on every machine.
set -euo pipefail
OUT=${1:?usage: bash scripts/train_pair.sh OUT [train_micro.py options]}
shift
case $OUT in /*) ;; *) OUT="$PWD/$OUT" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python}
start=$SECONDS
# 1. the draft (1 text layer): 10000 steps of 16 clips
"$PY" scripts/train_micro.py --out "$OUT" --model draft --steps 10000 --threads 2 --amp none \
    --seed 2 --lr 1e-3 --warmup 100 --curriculum 0.1 --eval-every 3 "$@"
# 2. the target, first with 1 text layer (the cheapest to train per clip)
"$PY" scripts/train_micro.py --out "$OUT/stage-a" --model target --text-layers 1 --steps 8000 \
    --threads 2 --seed 1 --lr 1e-3 --warmup 100 --curriculum 0.1 --eval-every 6 "$@"
# 3. deepened to 4 layers (new layers start as identity: the function is kept), then to 8
"$PY" scripts/train_micro.py --out "$OUT/stage-b" --model target --init "$OUT/stage-a" \
    --grow-layers 4 --steps 2000 --threads 2 --seed 3 --lr 5e-4 --warmup 20 --curriculum 0 \
    --eval-every 6 "$@"
"$PY" scripts/train_micro.py --out "$OUT" --model target --init "$OUT/stage-b" --grow-layers 8 \
    --steps 2800 --threads 2 --seed 4 --lr 5e-4 --warmup 20 --curriculum 0 --eval-every 6 "$@"
echo "trained the pair in $(( (SECONDS - start) / 60 )) minutes: $OUT/target, $OUT/draft"
