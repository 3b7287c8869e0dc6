#!/usr/bin/env bash
# The checks a lent GPU machine is for, in one run of about nine minutes at most: every method and command once on
# CUDA (scripts/methods_smoke.sh), the three speed benchmarks on the GPU (IAA's statistics update and step, SPICE's
# stages, the methods' steps), two short end-to-end runs (NNGK on Fashion-MNIST, SPICE on digits) and the tests that
# need a GPU (named *cuda*, skipped elsewhere). Every part has its own time limit, so one slow part cannot cost the
# others. What they print and measure is packed into device-results.tar.gz beside summary.txt (the device tool
# brings back at most 8 files) in $OUT, else in ./device-results.
#
# Here, once (fetches the pytorch-metric-learning wheel into .whl/ and copies Fashion-MNIST into data/, both ignored
# by git):   bash scripts/device_check.sh --prepare
# Then, with the device tool:   run(command="bash scripts/device_check.sh", carry=[".whl", "data"], timeout_s=600)
# It exits non-zero if any part failed or ran out of its time (summary.txt says which).
# The machine's own python3 (with CUDA torch, numpy, scipy, scikit-learn, matplotlib, pillow, pyyaml, tqdm) is used;
# weakdml runs from src/ without being installed. `DEVICE=cpu bash scripts/device_check.sh` tries the script's
# mechanics here (with .venv/bin first on PATH).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  set -e
  version=$(.venv/bin/python -c "import pytorch_metric_learning as p; print(p.__version__)")
  .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: -d .whl "pytorch-metric-learning==$version"
  mkdir -p data/FashionMNIST/raw
  cp /usr/share/datasets/fashion-mnist/*.gz data/FashionMNIST/raw/
  du -sh .whl data
  exit 0
fi
out=${OUT:-device-results} device=${DEVICE:-cuda}
results=$(mktemp -d)
mkdir -p "$out"
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
part() {  # part NAME SECONDS COMMAND...: run COMMAND with a limit, its output in NAME.log
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" > "$results/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - start)) s" | tee -a "$results/summary.txt"
}
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and
torch.cuda.get_device_name())" \
  | tee "$results/summary.txt"
part smoke 90 bash scripts/methods_smoke.sh "$device" "$results/smoke"
part iaa_step 60 python3 benchmarks/iaa_step.py --device "$device" --out "$results"
part spice_stages 90 python3 benchmarks/spice_stages.py --device "$device" --out "$results"
part methods_step 60 python3 benchmarks/methods_step.py --device "$device" --amp off,bf16 --out "$results"
part nngk_fashion 45 python3 -m weakdml train --device "$device" --dataset fashion-mnist --data-root data \
  --method nngk --epochs 3 --seed 0 --snapshot-images 0 --out "$results/runs/nngk" --progress off
part cluster_digits 120 python3 -m weakdml cluster --dataset digits --device "$device" --snapshot-images 0 \
  --out "$results/runs/cluster" --progress off
part tests 60 python3 -m pytest -q -p no:cacheprovider -k cuda tests  # the tests that need a GPU (skipped elsewhere)
# checkpoints, embeddings and splits stay behind: only what was measured comes back
find "$results/runs" \( -name "*.pt" -o -name "*.npy" -o -name "*.npz" -o -name split.json \) -delete 2>/dev/null
cat "$results/smoke/smoke.txt" >> "$results/summary.txt" 2>/dev/null
cp "$results/summary.txt" "$out/"
tar czf "$out/device-results.tar.gz" -C "$results" .
cat "$out/summary.txt"
! grep -q ": exit [1-9]" "$out/summary.txt"  # non-zero if any part failed or ran out of time
