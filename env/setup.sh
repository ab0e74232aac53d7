#!/usr/bin/env bash
# Create or update ihd's environment in .venv: pinned CPU/GPU-safe torch, the stack, ihd editable.
# Safe to re-run: it only reinstalls when env/requirements.txt or env/constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${IHD_VENV:-.venv}
[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PY" -m venv "$VENV"; }
stamp="$VENV/.ihd-env-stamp"
want=$(cat env/requirements.txt env/constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # pip's own lines (progress, and the warnings a machine's pip configuration can add for every package) go to a log
  # in the environment: the terminal gets one line, or the log's tail when pip fails
  plog="$VENV/pip-install.log"
  echo "[setup] installing the pinned stack (torch==2.13.0 via env/constraints.txt; a few minutes the first time; pip's log: $plog)"
  if ! { "$VENV/bin/pip" install -c env/constraints.txt -r env/requirements.txt && "$VENV/bin/pip" install --no-deps -e .; } >"$plog" 2>&1; then
    echo "[setup] pip failed; the end of $plog:"; tail -25 "$plog"; exit 1
  fi
  echo "[setup] installed the stack into $VENV"
  echo "$want" > "$stamp"
else
  echo "[setup] $VENV is up to date"
fi
# torchvision's CUDA wheel beside a CPU-only torch cannot load its compiled ops: detected and fixed here
"$VENV/bin/python" env/fix_torchvision.py
"$VENV/bin/python" -c "import torch, torchvision, fastai, ihd; print(f'[setup] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, fastai {fastai.__version__}, cuda={torch.cuda.is_available()}')"
