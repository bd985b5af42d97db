#!/usr/bin/env bash
# Sets up, builds and runs every test (the README's test command; .ci/run calls it).
# GPU tests (label gpu) skip, and say so, on a machine without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
