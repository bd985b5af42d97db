#!/usr/bin/env bash
# Creates tools/hf/venv: the Python side of the Hugging Face interop (tools/hf, its tests).
# Debian's python3-torch (1.13, CPU; installed by `tools/setup.sh --torch`) is reused through
# --system-site-packages; PyPI supplies the versions pinned in tools/hf/requirements.txt, which
# work with it and with each other (a CUDA torch wheel from PyPI would be gigabytes; not needed).
# Usage: tools/setup_hf.sh   (idempotent: a venv made from the same requirements.txt is kept)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=tools/hf/venv
REQ=tools/hf/requirements.txt   # every package pinned (the direct ones and their dependencies)
STAMP="$VENV/.moe-requirements"
if [ -x "$VENV/bin/python" ] && cmp -s "$STAMP" "$REQ"; then
  echo "setup_hf: $VENV up to date"
  exit 0
fi
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  echo "setup_hf: Debian's python3-torch is missing: run tools/setup.sh --torch first" >&2; exit 1; }
rm -rf "$VENV"
/usr/bin/python3 -m venv --system-site-packages "$VENV"
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"; then
  # A half-filled venv would make the hf tests fail on imports instead of saying what is missing.
  rm -rf "$VENV"
  echo "setup_hf: error: pip could not install $REQ from PyPI (see above); $VENV removed" >&2
  exit 1
fi
"$VENV/bin/python" -c 'import torch, transformers, tokenizers, lm_eval
print("setup_hf: torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__)'
cp "$REQ" "$STAMP"
