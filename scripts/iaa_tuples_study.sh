#!/usr/bin/env bash
# IAA with many training classes (docs/results.md): class-disjoint retrieval on Fashion-MNIST tuples
# (scripts/fashion_tuples.py, the "combinations" split: half the tuples trained on, the other half retrieved), MS and
# MS + IAA with the same budget, small-cnn from scratch, 4 images per class in batches of 128, seeds 0-2:
#   pairs-*     50 training classes of 60 images (CUB-like)
#   triples-*   500 training classes of 12 images (fewer than --iaa-tau: the neighbour correction acts), also
#               without the correction
# Usage: scripts/iaa_tuples_study.sh OUT   (run it again to continue; finished runs are skipped)
# Then: .venv/bin/python scripts/iaa_study_table.py OUT
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: $0 OUT}
SEEDS=${SEEDS:-0-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
data() {  # data NAME SLOTS PER_CLASS: the folder, written once
  [ -d "$OUT/data/$1/test" ] || .venv/bin/python scripts/fashion_tuples.py "$OUT/data/$1" --slots "$2" \
    --split combinations --per-class "$3" >> "$OUT/study.log"
}
study() {  # study VARIANT DATA FLAGS...
  local variant=$1 folder=$OUT/data/$2; shift 2
  .venv/bin/weakdml compare --seeds "$SEEDS" --out "$OUT/$variant" --methods ms --dataset folder --data-root "$folder" \
    --class-disjoint --augment none --labeled-fraction 1 --val-fraction 0 --monitor last --progress off \
    --batch-size 128 --m-per-class 4 --epochs "${EPOCHS:-40}" --eval-every "${EPOCHS:-40}" "$@" >> "$OUT/study.log" 2>&1
}
data pairs 2 60
data triples 3 12
study pairs-plain pairs
study pairs-iaa pairs --iaa
study triples-plain triples
study triples-iaa triples --iaa
study triples-iaa-no-correction triples --iaa --no-neighbour-correction
