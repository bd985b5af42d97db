#!/usr/bin/env bash
# Configures and builds moe-spec into build/ (Release). The CUDA backend is compiled whenever nvcc
# is on PATH (MOE_CUDA=AUTO), for sm_80 and sm_90, with warnings as errors, and with it the cuDNN
# attention path (MOE_CUDNN=ON).
# Usage: tools/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
# With nvcc, the cuDNN attention path is required (tools/setup.sh fetched its cudnn-frontend
# headers): a build that silently lost it would skip compiling it with -Werror.
CUDNN=()
if command -v nvcc >/dev/null; then CUDNN=(-DMOE_CUDNN=ON); fi
GEN=()
if command -v ninja >/dev/null; then GEN=(-G Ninja); fi
cmake -S . -B build "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DMOE_WERROR=ON "${CUDNN[@]}" "$@"
cmake --build build -j"$(nproc)"
