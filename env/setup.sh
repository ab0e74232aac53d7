#!/usr/bin/env bash
# Create or update ihd's environment in .venv: the pinned torch built for this machine (CPU, or CUDA where an NVIDIA
# driver is), the stack, ihd editable. Safe to re-run: it only reinstalls when env/requirements.txt,
# env/constraints.txt or the torch build this machine needs changed, and rebuilds a .venv whose torch does not match
# the machine (a CUDA build where there is no GPU, a CPU build where there is one, or a CUDA newer than the driver's).
#   env/setup.sh            set up (or check) .venv
#   env/setup.sh --dry-run  print what it would install and why, change nothing
#   env/setup.sh --selftest check that choice for a CPU and several GPU machines (fake nvidia-smi, no network)
# IHD_TORCH=cpu|cu126|cu128|cu130 forces the build; IHD_NVIDIA_SMI names the nvidia-smi to ask ('none': act as if
# there were no GPU); IHD_VENV the folder; PYTHON the interpreter that creates it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${IHD_VENV:-.venv}
TORCH=2.13.0 TORCHVISION=0.28.0   # as pinned in env/constraints.txt
DRY=0
# --selftest: the choice above checked without network or a GPU: a fake nvidia-smi on PATH, a fake .venv
selftest() {
  local t; t=$(mktemp -d); trap 'rm -rf "$t"' RETURN
  mkdir -p "$t/bin" "$t/venv/lib/python3.11/site-packages/torch"
  printf '#!/bin/sh\necho "| NVIDIA-SMI 570.86.15    Driver Version: 570.86.15    CUDA Version: %s |"\n' '$FAKE_CUDA' > "$t/bin/nvidia-smi"
  chmod +x "$t/bin/nvidia-smi"
  printf "__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n" > "$t/venv/lib/python3.11/site-packages/torch/version.py"
  local bad=0 out
  check() { if printf '%s' "$out" | grep -qF -- "$2"; then echo "  ok: $1"; else echo "  FAIL: $1: no '$2' in:"; printf '%s\n' "$out"; bad=1; fi; }
  out=$(IHD_VENV="$t/venv" IHD_NVIDIA_SMI=none "$0" --dry-run 2>&1); check "no driver: CPU build" "torch build: cpu"
  check "no driver, CPU .venv: kept" "$t/venv: cpu"
  out=$(IHD_VENV="$t/venv" PATH="$t/bin:$PATH" FAKE_CUDA=12.8 "$0" --dry-run 2>&1); check "driver CUDA 12.8: cu128" "torch==$TORCH+cu128"
  check "GPU machine, CPU .venv: rebuilt" "would be REBUILT: it holds the CPU build"
  out=$(IHD_VENV="$t/venv" PATH="$t/bin:$PATH" FAKE_CUDA=13.2 "$0" --dry-run 2>&1); check "driver CUDA 13.2: cu130" "torch==$TORCH+cu130"
  out=$(IHD_VENV="$t/venv" PATH="$t/bin:$PATH" FAKE_CUDA=12.6 "$0" --dry-run 2>&1); check "driver CUDA 12.6: cu126" "torch==$TORCH+cu126"
  out=$(IHD_VENV="$t/venv" PATH="$t/bin:$PATH" FAKE_CUDA=12.2 "$0" --dry-run 2>&1; echo "rc=$?"); check "driver CUDA 12.2: refused" "needs CUDA 12.6 or newer"
  check "driver CUDA 12.2: non-zero exit" "rc=1"
  printf "__version__ = '2.13.0+cu130'\ncuda: Optional[str] = '13.0'\n" > "$t/venv/lib/python3.11/site-packages/torch/version.py"
  out=$(IHD_VENV="$t/venv" IHD_NVIDIA_SMI=none "$0" --dry-run 2>&1); check "no driver, CUDA .venv: rebuilt" "would be REBUILT: it holds a CUDA build"
  out=$(IHD_VENV="$t/venv" PATH="$t/bin:$PATH" FAKE_CUDA=12.8 "$0" --dry-run 2>&1); check "CUDA 13.0 .venv, 12.8 driver: rebuilt" "newer than this driver"
  out=$(IHD_VENV="$t/venv" PATH="$t/bin:$PATH" FAKE_CUDA=13.0 "$0" --dry-run 2>&1); check "CUDA 13.0 .venv, 13.0 driver: kept" "$t/venv: cuda:13.0"
  [ "$bad" = 0 ] && echo "[setup] selftest: the torch build choice is right for each machine (no network, fake nvidia-smi)"
  return $bad
}
for a in "$@"; do case "$a" in --dry-run) DRY=1 ;; --selftest) selftest; exit $? ;;
  *) echo "[setup] unknown option $a (expected --dry-run or --selftest)" >&2; exit 2 ;; esac; done

# The CUDA version the driver supports (nvidia-smi's header, e.g. "CUDA Version: 12.4"), or '' without a usable driver
driver_cuda() {
  local smi=${IHD_NVIDIA_SMI:-$(command -v nvidia-smi || true)}
  [ "$(uname -s)" = Linux ] && [ -n "$smi" ] && [ "$smi" != none ] || return 0
  "$smi" 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -1
}
# The PyTorch wheel index for a driver's CUDA version: the newest build of torch 2.13 the driver can run (a driver runs
# builds of its own CUDA version and older). PyPI's torch 2.13.0 itself is the cu130 build (it requires CUDA 13.0
# packages); cu128 and cu126 are the older-driver builds on the PyTorch index (not reachable from the project's
# development machines: checked on a GPU machine only; IHD_TORCH=cuXYZ picks another).
cuda_tag() {
  local v=$1 major=${1%%.*} minor=${1#*.}; local n=$((major*10 + minor))
  if [ "$n" -ge 130 ]; then echo cu130; elif [ "$n" -ge 128 ]; then echo cu128; elif [ "$n" -ge 126 ]; then echo cu126; else echo "old:$v"; fi
}
# Whether this machine's pip configuration (find-links) offers the CPU build of the pinned torch (this machine's does)
pip_has_cpu_torch() {
  local dirs
  dirs="$(${PIP_FIND_LINKS:+echo "$PIP_FIND_LINKS"}; "$PY" -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p")"
  for d in $dirs; do ls "${d#file://}"/torch-$TORCH+cpu-*.whl >/dev/null 2>&1 && return 0; done
  return 1
}
# The torch build in the environment: cpu, cuda:<version>, or '' when there is none
venv_torch() {
  local f; f=$(ls "$VENV"/lib/python*/site-packages/torch/version.py 2>/dev/null | head -1)
  [ -n "$f" ] || return 0
  local c; c=$(sed -n "s/^cuda[^=]*= *'\([0-9.]*\)'.*/\1/p" "$f")
  if [ -n "$c" ]; then echo "cuda:$c"; else echo cpu; fi
}
ver_num() { local major=${1%%.*} minor=${1#*.}; echo $((major*10 + ${minor%%.*})); }

cuda=$(driver_cuda)
want=${IHD_TORCH:-$([ -n "$cuda" ] && cuda_tag "$cuda" || echo cpu)}
case "$want" in
  old:*) echo "[setup] this NVIDIA driver supports CUDA ${want#old:}: torch $TORCH needs CUDA 12.6 or newer (a driver of 560 or newer);" \
              "update the driver, or set IHD_TORCH=cpu for a CPU-only environment" >&2; exit 1 ;;
  cpu|cu126|cu128|cu130) ;;
  *) echo "[setup] IHD_TORCH=$want: expected cpu, cu126, cu128 or cu130" >&2; exit 2 ;;
esac
# The command that installs torch and torchvision first (the stack's install then finds them satisfied), or none
if [ "$want" = cpu ]; then
  if pip_has_cpu_torch; then torch_cmd=""; why="the CPU build of torch $TORCH from this machine's pip configuration (find-links)"
  else torch_cmd="--index-url https://download.pytorch.org/whl/cpu torch==$TORCH+cpu"; why="no NVIDIA driver: the CPU build from the PyTorch index"; fi
else
  torch_cmd="--index-url https://download.pytorch.org/whl/$want --extra-index-url https://pypi.org/simple torch==$TORCH+$want torchvision==$TORCHVISION+$want"
  why="NVIDIA driver with CUDA ${cuda:-?}: the $want build of torch $TORCH"
fi
have=$(venv_torch)
rebuild=""
case "$want:$have" in
  cpu:cuda:*) rebuild="it holds a CUDA build of torch (${have#cuda:}) and this machine has no usable NVIDIA driver" ;;
  cu*:cpu) rebuild="it holds the CPU build of torch and this machine has an NVIDIA driver (CUDA $cuda)" ;;
  cu*:cuda:*) lim=$([ -n "$cuda" ] && ver_num "$cuda" || echo "${want#cu}")
              [ "$(ver_num "${have#cuda:}")" -le "$lim" ] || rebuild="its torch is built for CUDA ${have#cuda:}, newer than this driver's ${cuda:-$want}" ;;
esac
pipcmd="pip install -c env/constraints.txt -r env/requirements.txt && pip install --no-deps -e ."
if [ "$DRY" = 1 ]; then
  echo "[setup] dry run: machine $(uname -s), NVIDIA driver CUDA version: ${cuda:-none}"
  echo "[setup] torch build: $want ($why)"
  echo "[setup] $VENV: ${have:-no torch yet}${rebuild:+; would be REBUILT: $rebuild}"
  [ -n "$torch_cmd" ] && echo "[setup] would run: pip install $torch_cmd"
  echo "[setup] would run: $pipcmd"
  exit 0
fi
if [ -n "$rebuild" ]; then
  [ -f "$VENV/pyvenv.cfg" ] || { echo "[setup] $VENV should be rebuilt ($rebuild) but is not a virtual environment: remove it yourself" >&2; exit 1; }
  echo "[setup] rebuilding $VENV: $rebuild"; rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PY" -m venv "$VENV"; }
stamp="$VENV/.ihd-env-stamp"
want_stamp=$( (cat env/requirements.txt env/constraints.txt pyproject.toml; [ "$want" = cpu ] || echo "$want") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]; then
  # pip's own lines (progress, and the warnings a machine's pip configuration can add for every package) go to a log
  # in the environment: the terminal gets one line, or the log's tail when pip fails
  plog="$VENV/pip-install.log"
  echo "[setup] installing the pinned stack (torch $TORCH: $why; a few minutes the first time; pip's log: $plog)"
  if ! { { [ -z "$torch_cmd" ] || "$VENV/bin/pip" install $torch_cmd; } \
         && "$VENV/bin/pip" install -c env/constraints.txt -r env/requirements.txt && "$VENV/bin/pip" install --no-deps -e .; } >"$plog" 2>&1; then
    echo "[setup] pip failed; the end of $plog:"; tail -25 "$plog"; exit 1
  fi
  echo "[setup] installed the stack into $VENV"
  echo "$want_stamp" > "$stamp"
else
  echo "[setup] $VENV is up to date"
fi
# torchvision's CUDA wheel beside a CPU-only torch cannot load its compiled ops: detected and fixed here
"$VENV/bin/python" env/fix_torchvision.py
"$VENV/bin/python" -c "import torch, torchvision, fastai, ihd; print(f'[setup] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, fastai {fastai.__version__}, cuda={torch.cuda.is_available()}')"
