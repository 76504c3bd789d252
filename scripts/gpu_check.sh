#!/usr/bin/env bash
# The prepared accelerator check: CUDA subset of the tests, fp32/amp/amp_bf16 steps and their
# loss differences, host syncs per step, a one-process torchrun with NCCL, ViT-B-16 training
# throughput and MFU, loader samples/s with all cores, evaluation images/s. Fits 8 minutes on
# one H200; writes OUT/results.json and OUT/results.md (OUT: --out, else $OUT, else gpu_check_out).
#
#   scripts/gpu_check.sh [--dry-run] [--out DIR] [--parts env,world,tests,...] [--budget-s S]
#
# --dry-run runs every part on the CPU at tiny size (what the test suite checks). Python: the
# interpreter in $FARSLIP_PYTHON, else ./.venv/bin/python, else python3 if it has torch and
# open_clip, else `make setup` builds .venv (needs the package index or a wheel cache: the
# check itself downloads nothing; models have random weights, data is synthetic).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
has_deps() { "$1" -c "import torch, torchvision, open_clip, webdataset" >/dev/null 2>&1; }
if [ -n "${FARSLIP_PYTHON:-}" ]; then
  PY=$FARSLIP_PYTHON
  has_deps "$PY" || { echo "gpu_check: FARSLIP_PYTHON=$PY lacks torch/torchvision/open_clip/webdataset" >&2; exit 2; }
elif [ -x .venv/bin/python ] && has_deps .venv/bin/python; then
  PY=.venv/bin/python
elif command -v python3 >/dev/null && has_deps python3; then
  PY=python3
else
  echo "gpu_check: no python with the dependencies; building .venv with make setup" >&2
  make setup >&2 || { echo "gpu_check: make setup failed (no package index?); set FARSLIP_PYTHON" >&2; exit 2; }
  PY=.venv/bin/python
fi
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_check.py "$@"
