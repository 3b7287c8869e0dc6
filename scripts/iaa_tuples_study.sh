#!/usr/bin/env bash
# IAA with many training classes (docs/results.md): class-disjoint retrieval on Fashion-MNIST tuples
# (scripts/fashion_tuples.py, the "combinations" split: half the tuples trained on, the other half retrieved), MS and
# MS + IAA with the same budget, small-cnn from scratch, 4 images per class in batches of 128, seeds 0-2:
#   pairs-*     50 training classes of 60 images (CUB-like)
#   triples-*   500 training classes of 12 images (fewer than --iaa-tau: the neighbour correction acts), also
#               without the correction, and Contrastive and Triplet with and without IAA (triples-pair-losses-*)
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
study() {  # study VARIANT DATA METHODS FLAGS...
  local variant=$1 folder=$OUT/data/$2 methods=$3; shift 3
  .venv/bin/weakdml compare --seeds "$SEEDS" --out "$OUT/$variant" --methods "$methods" --dataset folder \
    --data-root "$folder" --class-disjoint --augment none --labeled-fraction 1 --val-fraction 0 --monitor last \
    --progress off --batch-size 128 --m-per-class 4 --epochs "${EPOCHS:-40}" --eval-every "${EPOCHS:-40}" "$@" \
    >> "$OUT/study.log" 2>&1
}
data pairs 2 60
data triples 3 12
study pairs-plain pairs ms
study pairs-iaa pairs ms --iaa
study triples-plain triples ms
study triples-iaa triples ms --iaa
study triples-iaa-no-correction triples ms --iaa --no-neighbour-correction
MARGINS="--contrastive-distance cosine --contrastive-pos-margin 0.8 --contrastive-neg-margin 0.5"  # the IAA paper's
study triples-pair-losses-plain triples contrastive,triplet $MARGINS
study triples-pair-losses-iaa triples contrastive,triplet $MARGINS --iaa
