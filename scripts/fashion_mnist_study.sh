#!/usr/bin/env bash
# The Fashion-MNIST study of docs/results.md: 10 % labels, small-cnn, the same budget for every method (10 epochs,
# Adam 1e-3 with cosine decay; MbDML4 adds one noisy student round, started from the teacher, of 10 epochs with 3
# unlabelled images per labelled one). It runs exactly what
#   weakdml compare --methods "$METHODS" --seeds 0-2 --out "$OUT" $FLAGS
# runs, but as several workers at once (each single-threaded, which uses 2 CPU cores better than one process):
#   scripts/fashion_mnist_study.sh OUT [WORKERS]
# The environment may change the protocol: METHODS=a,b,... (a subset), SEEDS="0 1 2", EPOCHS=10, NST_EPOCHS=10,
# NST_AUGMENT=strong (the student's augmentation), NST_ROUNDS=1, NST_INIT=teacher, NST_WIDTH (e.g. 2: a student with twice
# the channels; needs NST_INIT=scratch).
# Each worker walks seeds then methods, skips finished runs, resumes interrupted ones, and takes a run only by
# creating its lock directory, so workers never share a run. Afterwards:
#   weakdml compare --table-only --out OUT --methods "$METHODS" --seeds 0-2 && weakdml plot OUT --what curves
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: $0 OUT [WORKERS]}
WORKERS=${2:-2}
METHODS=${METHODS:-"cross-entropy,mixup,contrastive,proxy-anchor,triplet,nngk,mbdml1,mbdml2,mbdml3,mbdml4"}
SEEDS=${SEEDS:-"0 1 2"}
FLAGS="--dataset fashion-mnist --epochs ${EPOCHS:-10} --lr 0.001 --nst-epochs ${NST_EPOCHS:-10} --unlabeled-ratio 3"
FLAGS="$FLAGS --nst-init ${NST_INIT:-teacher} ${NST_WIDTH:+--nst-width $NST_WIDTH} --nst-augment ${NST_AUGMENT:-strong}"
FLAGS="$FLAGS --nst-rounds ${NST_ROUNDS:-1} --progress off"
mkdir -p "$OUT/runs"

worker() {
  local order=$1
  for seed in $SEEDS; do
    for method in $order; do
      local run=$OUT/runs/$method-s$seed
      [ -f "$run/final_metrics.json" ] && continue
      mkdir "$run.lock" 2>/dev/null || continue
      if [ -f "$run/last.pt" ]; then
        OMP_NUM_THREADS=1 .venv/bin/weakdml train --resume "$run" --progress off || true
      else
        OMP_NUM_THREADS=1 .venv/bin/weakdml train $FLAGS --method "$method" --seed "$seed" --out "$run" || true
      fi >> "$OUT/study.log" 2>&1
      rmdir "$run.lock"
    done
  done
}

order=${METHODS//,/ }
for w in $(seq 1 "$WORKERS"); do
  worker "$order" &
  order=$(echo "$order" | awk '{for (i = NF; i > 0; i--) printf "%s ", $i}')  # the next worker starts at the end
done
wait
