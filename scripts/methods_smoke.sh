#!/usr/bin/env bash
# Every method and command once on a device, on the embedded digits (one or two epochs each): a check that
# nothing mixes devices or dtypes (on CUDA, mixed precision is on by default), not a measurement. (The clustering
# pipeline needs more epochs than this to find a reliable sample in every cluster: scripts/device_check.sh runs
# `weakdml cluster --dataset digits` with its defaults.)
#
#   bash scripts/methods_smoke.sh [DEVICE] [OUT]     # DEVICE: cuda (default), cpu, ...; OUT: where the logs go
#
# Runs weakdml from src/ with the python3 on PATH, the commands side by side; one line per command in OUT/smoke.txt
# (its exit status and seconds), its output in OUT/smoke-NAME.log. Exits non-zero if any command failed.
set -uo pipefail
cd "$(dirname "$0")/.."
device=${1:-cuda} out=${2:-device-results}
runs=$(mktemp -d)
mkdir -p "$out"
: > "$out/smoke.txt"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the commands run side by side
smoke() {  # smoke NAME ARGS...: one weakdml command; its line in smoke.txt
  local name=$1 start=$SECONDS
  shift
  python3 -m weakdml "$@" > "$out/smoke-$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - start)) s" | tee -a "$out/smoke.txt"
}
common=(--dataset digits --device "$device" --seed 0 --progress off)
# first every command that needs no other's run, all at once; then the four that start from one of those
for method in nngk cross-entropy mixup mbdml1 mbdml2 mbdml3 proxy-anchor soft-triple supcon; do
  smoke "$method" train "${common[@]}" --method "$method" --epochs 1 --out "$runs/$method" &
done
smoke nngk-resumed train "${common[@]}" --method nngk --epochs 1 --out "$runs/nngk-resumed" &
smoke mbdml4 train "${common[@]}" --method mbdml4 --epochs 1 --nst-rounds 1 --out "$runs/mbdml4" &
for loss in ms contrastive triplet; do  # IAA from the first epoch, statistics refreshed at the second
  smoke "$loss-iaa" train "${common[@]}" --method "$loss" --iaa --iaa-start-epoch 0 --iaa-update-every 1 \
    --class-disjoint --epochs 2 --out "$runs/$loss-iaa" &
done
smoke ms-mdr train "${common[@]}" --method ms --mdr --class-disjoint --epochs 1 --out "$runs/ms-mdr" &
smoke pretrain pretrain "${common[@]}" --epochs 1 --out "$runs/moco" &
wait
smoke from-moco train "${common[@]}" --method nngk --pretrained "$runs/moco" --epochs 1 --out "$runs/from-moco" &
smoke embed embed "$runs/nngk" --device "$device" &
smoke evaluate evaluate "$runs/ms-iaa" --device "$device" &
# a second epoch in float16 with loss scaling, resumed from the first (saved without a loss scale on CUDA: bf16)
smoke resume-fp16 train --resume "$runs/nngk-resumed" --epochs 2 --amp fp16 --device "$device" &
wait
rm -rf "$runs"
! grep -v ": exit 0 after" "$out/smoke.txt"  # non-zero if any command failed (and its line shown again)
