#!/usr/bin/env bash
# Creates tools/hf/venv: the Python side of the Hugging Face interop (tools/hf, its tests).
# Debian's python3-torch (1.13, CPU; installed by `tools/setup.sh --torch`) is reused through
# --system-site-packages; PyPI supplies the pinned versions below, which work with it and with
# each other (a CUDA torch wheel from PyPI would be gigabytes and is not needed).
# Usage: tools/setup_hf.sh   (idempotent: a venv whose stamp matches the pins is kept)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=tools/hf/venv
PINS=(numpy==1.26.4 transformers==4.44.2 tokenizers==0.19.1 safetensors==0.4.5 huggingface-hub==0.24.7
      sentencepiece==0.2.0 protobuf==4.25.8
      lm-eval==0.4.12 datasets==4.0.0 pyarrow==20.0.0)
STAMP="$VENV/.moe-pins"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "${PINS[*]}" ]; then
  echo "setup_hf: $VENV up to date"
  exit 0
fi
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  echo "setup_hf: Debian's python3-torch is missing: run tools/setup.sh --torch first" >&2; exit 1; }
rm -rf "$VENV"
/usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
"$VENV/bin/python" -c 'import torch, transformers, tokenizers, lm_eval
print("setup_hf: torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__)'
echo "${PINS[*]}" > "$STAMP"
