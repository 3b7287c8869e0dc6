#!/usr/bin/env bash
# Create .venv (once) and install weakdml with everything it and its tests need; re-installs only when
# pyproject.toml or constraints.txt change. With no torch on the machine it installs the CPU build pinned in
# constraints.txt (never several GB of CUDA packages); a torch already installed for $PYTHON (e.g. a CUDA build) is
# used as it is, and torchvision is pinned to match it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.weakdml-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if system_torch=$("$PYTHON" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null); then
  echo "setup: using the installed torch $system_torch" >&2
  [ -x .venv/bin/python ] || "$PYTHON" -m venv --system-site-packages .venv
  printf 'torch==%s\n' "$system_torch" > .venv/constraints-local.txt
  constraints=.venv/constraints-local.txt
else
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  constraints=constraints.txt
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install --quiet -c "$constraints" -e ".[test,faiss]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import weakdml.cli, torch; from weakdml.compat import import_torchvision; import_torchvision()"
echo "$want" > "$stamp"
