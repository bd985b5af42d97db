#!/usr/bin/env bash
# Sets up, builds, and trains the quickstart model on real English text (the Debian fortunes
# corpus) on the CPU. About 5 minutes on 2 cores. The run goes to runs/quickstart; running the
# script again continues that run (moetrain --resume) instead of overwriting it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
RUN=runs/quickstart
if [ -d "$RUN/checkpoints" ] && [ -n "$(ls -A "$RUN/checkpoints" 2>/dev/null)" ]; then
  echo "quickstart: $RUN already holds a run; continuing it (delete $RUN to start afresh)"
  exec ./build/apps/moetrain --resume "$RUN" "$@"
fi
exec ./build/apps/moetrain --config configs/quickstart.yaml --set run.out_dir="$RUN" "$@"
