#!/usr/bin/env bash
# The GPU check in one call on a bare GPU machine: the worker's stack from .gpu/wheels
# (made by `python bench/gpu_bundle.py`) installed over the machine's own torch, then
# bench/gpu_check.py; the report lands in $OUT (default .gpu/out).
#
#   bash bench/gpu_run.sh                               # on the GPU machine
#   GPU_PYTHON=/path/to/python3.12 bash bench/gpu_run.sh --device cpu --sizes small   # a dry run
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${GPU_PYTHON:-python3}"
OUT="$(realpath -m "${OUT:-.gpu/out}")"
SITE="$(realpath -m "${GPU_SITE:-.gpu/site}")"
mkdir -p "$OUT"
test -d .gpu/wheels || { echo "error: no .gpu/wheels: run python bench/gpu_bundle.py first" >&2; exit 1; }
"$PY" -m pip install --quiet --no-deps --no-index --upgrade --target "$SITE" .gpu/wheels/*.whl
export PYTHONPATH="$SITE:$PWD/src" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
set -o pipefail
"$PY" bench/gpu_check.py --out "$OUT" --tokenizer .gpu/tokenizer "$@" 2>&1 | tee "$OUT/log.txt"
