#!/usr/bin/env bash
# Runs the PyTorch reference's self-checks (tools/reference/self_check.py): finite-difference
# gradients of the reference model, docs/model.md properties of the losses, AdamW against torch.optim, and
# that the committed fixtures tests/data/fixtures/* equal a fresh computation.
# Needs python3 with torch (Debian python3-torch); without it the test is SKIPPED (exit 77,
# registered with SKIP_RETURN_CODE 77 in tests/CMakeLists.txt), never counted as passed.
# Usage: reference_selfcheck.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
SOURCE_DIR="${2:?usage: reference_selfcheck.sh BUILD_DIR SOURCE_DIR}"
PYTHON="${MOE_PYTHON:-/usr/bin/python3}"   # MOE_PYTHON: another interpreter (or a test of the skip)
[ -x "$PYTHON" ] || PYTHON="$(command -v python3 || true)"
if [ -z "$PYTHON" ] || ! "$PYTHON" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIPPED: python3 with torch and numpy is not available (install python3-torch:" \
       "tools/setup.sh --torch); the reference self-check did not run." >&2
  exit 77
fi
exec "$PYTHON" "$SOURCE_DIR/tools/reference/self_check.py"
