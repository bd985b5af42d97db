#!/usr/bin/env bash
# The cuDNN attention benchmark of issue 15, for a machine with a GPU (never run yet:
# docs/benchmarks.md): attention forward+backward time, native kernels against cuDNN, at
# seq 256 / 1024 / 4096 (0.4b model heads, 16384 tokens per call), then moebench's 0.4b MFU with
# each implementation. Every figure is the median of several runs (bench_attention: --runs 5;
# moebench: the best of 3 rounds of --steps steps, as moebench reports it).
#
# Usage: tools/bench_attention.sh OUTDIR [BUILD_DIR=build]
#   env STEPS (moebench timed steps, default 10), SEQS (default 256,1024,4096),
#       SKIP_MOEBENCH=1 (attention only). Writes OUTDIR/attention_{native,cudnn}.json,
#       OUTDIR/moebench_0.4b_{native,cudnn}.json and OUTDIR/summary.txt.
# In a gpu_bundle (tools/gpu_bundle.sh), BUILD_DIR is the unpacked payload: its bin/ holds
# bench_attention and moebench.
set -euo pipefail
OUT=${1:?usage: tools/bench_attention.sh OUTDIR [BUILD_DIR]}
BUILD=${2:-build}
mkdir -p "$OUT"
find_bin() {  # a build tree (apps/, top level) or an unpacked bundle (bin/)
  for p in "$BUILD/$1" "$BUILD/apps/$1" "$BUILD/bin/$1"; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "bench_attention.sh: $1 not found under $BUILD" >&2; exit 2
}
BENCH=$(find_bin bench_attention)
MOEBENCH=$(find_bin moebench)
SEQS=${SEQS:-256,1024,4096}
STEPS=${STEPS:-10}
: > "$OUT/summary.txt"
for impl in native cudnn; do
  "$BENCH" --device cuda --attention "$impl" --seq "$SEQS" --runs 5 --reps 10 \
    --json "$OUT/attention_$impl.json" | tee -a "$OUT/summary.txt"
done
if [ "${SKIP_MOEBENCH:-0}" != 1 ]; then
  for impl in native cudnn; do
    "$MOEBENCH" --preset 0.4b --device cuda --dtype bf16 --steps "$STEPS" --skip-overhead \
      --set train.attention="$impl" --json "$OUT/moebench_0.4b_$impl.json" 2>&1 |
      tee -a "$OUT/summary.txt"
  done
fi
echo "bench_attention.sh: results in $OUT"
