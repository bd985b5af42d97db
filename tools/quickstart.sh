#!/usr/bin/env bash
# Sets up, builds, and trains the quickstart model on real English text (the Debian fortunes
# corpus) on the CPU. About 5 minutes on 2 cores. The run goes to runs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
./build/apps/moetrain --config configs/quickstart.yaml "$@"
