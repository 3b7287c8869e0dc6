#!/usr/bin/env bash
# The IAA study of docs/results.md: class-disjoint Fashion-MNIST (classes 0-4 trained, 5-9 retrieved), small-cnn from
# scratch, the same budget for every variant, seeds 0-2. One `weakdml compare` per variant, each in OUT/<variant>:
#   ms, contrastive, triplet        the plain losses (contrastive with the IAA paper's cosine margins 0.8 / 0.5)
#   iaa                             the same three with --iaa
#   ms-iaa-no-correction            MS + IAA without the neighbour correction
#   ms-mdr                          MS + MDR
#   few-*                           10 images per training class: MS, MS + IAA with and without the correction
#   batch20-*                       MS and MS + IAA with batches of 20 (4 images of each of the 5 classes)
#   moco-*                          with MOCO=RUN_DIR (a `weakdml pretrain --train-classes 0-4` run): MS and MS + IAA
#                                   from that backbone, as above and with the IAA paper's fine-tuning (moco-recipe-*)
# Usage: scripts/iaa_study.sh OUT   (run it again to continue after an interruption; finished runs are skipped).
# Then: .venv/bin/python scripts/iaa_study_table.py OUT
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: $0 OUT}
SEEDS=${SEEDS:-0-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON="--dataset fashion-mnist --train-classes 0-4 --val-fraction 0 --monitor last --progress off
        --contrastive-distance cosine --contrastive-pos-margin 0.8 --contrastive-neg-margin 0.5"
MAIN="$COMMON --labels-per-class ${PER_CLASS:-500} --epochs ${EPOCHS:-10} --batch-size 128 --eval-every ${EPOCHS:-10}"
BATCH20="$COMMON --labels-per-class ${PER_CLASS:-500} --epochs ${EPOCHS:-10} --batch-size 20 --eval-every ${EPOCHS:-10}"
FEW="$COMMON --labels-per-class 10 --epochs 30 --batch-size 20 --eval-every 30"
study() { local out=$1; shift; .venv/bin/weakdml compare --seeds "$SEEDS" --out "$OUT/$out" "$@" >> "$OUT/study.log" 2>&1; }
mkdir -p "$OUT"
study plain --methods ms,contrastive,triplet $MAIN
study iaa --methods ms,contrastive,triplet --iaa $MAIN
study ms-iaa-no-correction --methods ms --iaa --no-neighbour-correction $MAIN
study ms-mdr --methods ms --mdr $MAIN
study few-plain --methods ms $FEW
study few-iaa --methods ms --iaa $FEW
study few-iaa-no-correction --methods ms --iaa --no-neighbour-correction $FEW
study batch20-plain --methods ms $BATCH20
study batch20-iaa --methods ms --iaa $BATCH20
if [ -n "${MOCO:-}" ]; then
  RECIPE="$COMMON --labels-per-class 500 --epochs 10 --eval-every 10 --batch-size 20 --m-per-class 4 --batchnorm frozen
          --lr 0.0001 --embedding-lr-factor 10 --weight-decay 0.0004"
  study moco-plain --methods ms $MAIN --pretrained "$MOCO"
  study moco-iaa --methods ms --iaa $MAIN --pretrained "$MOCO"
  study moco-recipe-plain --methods ms $RECIPE --pretrained "$MOCO"
  study moco-recipe-iaa --methods ms --iaa $RECIPE --pretrained "$MOCO"
fi
