#!/usr/bin/env bash
# Runs one tests/hf/test_*.py in tools/hf/venv. Usage: run_py_test.sh SCRIPT BUILD SRC
# Exit 77 (ctest: skipped) with the reason when the venv is missing.
set -euo pipefail
SCRIPT=$1 BUILD=$(cd "$2" && pwd) SRC=$(cd "$3" && pwd)
PY="$SRC/tools/hf/venv/bin/python"
if [ ! -x "$PY" ]; then
  echo "SKIPPED: $PY missing: run tools/setup.sh --hf (tools/test.sh does) to create the venv" >&2
  exit 77
fi
export PYTHONPATH="$SRC/tools/hf:$SRC/tests/hf" OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 \
       TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" "$SCRIPT" "$BUILD" "$SRC"
