#!/usr/bin/env bash
# Runs on the GPU machine, from a bundle made by tools/gpu_bundle.sh (copied there as run.sh):
#   1. the gpu tests (GoogleTest XML + logs), then the bundled cpu tests;
#   2. compute-sanitizer: memcheck and synccheck on every op case, racecheck on the shared-memory
#      kernels, memcheck on the determinism and cuDNN attention tests;
#   3. moebench (small and 0.4b: tokens/s, MFU vs 989 TFLOP/s and vs the measured cuBLAS GEMM
#      rate, step-time breakdown by op family, sp+cp overhead) and the PyTorch peer on the same
#      GPU; a summary of both.
# Everything goes into OUTDIR. A failing step is recorded in OUTDIR/status.txt and the script
# goes on; it exits non-zero if any step failed.
#
# Usage: ./run.sh OUTDIR [MODE]
#   (no MODE)    everything above (~15-25 min: longer than one 10-minute device call)
#   --tests      the gpu tests only (step 1 without the cpu tests): the first run on a new GPU
#   --quick      gpu tests, sanitizer subset, small benchmark with fewer steps
#   --sanitizer  step 2 only;   --bench  step 3 only
#   --apps       the apps end to end on the GPU: moetrain (bf16, cuDNN attention by auto) on the
#                replication config from data/ (run from the repository root), then moeeval
#                (perplexity, zero-shot) and moeinfer (greedy text, latency) on cuda and on the
#                CPU backend, same checkpoint; into OUTDIR (the run itself under /tmp)
#   --gridc      the replication study's Grid C (tools/replication.sh grid-c, docs/replication.md)
#                trained and evaluated on the GPU (--device cuda), restartable; the small per-run
#                results exported to OUTDIR/results (run from the repository root)
#   --attention  only the attention benchmark, native vs cuDNN (tools/bench_attention.sh, issue 15;
#                run --tests first: the cuDNN path has never run), into OUTDIR/attention
# Seconds per step: TEST_TIMEOUT (each gpu test binary, default 270), SAN_TIMEOUT (each of the 5
# sanitizer runs, default 180), BENCH_TIMEOUT (each of the 3 runs per preset, default 180).
# PRESETS (default "small 0.4b") picks the benchmark presets: one preset per call fits 10 minutes.
set -uo pipefail

OUT=${1:?usage: run.sh OUTDIR [--tests|--quick|--sanitizer|--bench|--attention]}
MODE=${2:-all}
case "$MODE" in
  all|--tests|--quick|--sanitizer|--bench|--attention|--apps|--gridc) ;;
  *) echo "run.sh: unknown mode '$MODE' (expected --tests, --quick, --sanitizer, --bench or" \
          "--attention)" >&2
     exit 2 ;;
esac
want() {  # want STEP: does MODE include step tests|cpu_tests|sanitizer|bench?
  case "$MODE:$1" in
    all:apps|all:gridc) return 1 ;;  # explicit modes only
    all:*|--tests:tests|--quick:tests|--quick:sanitizer|--quick:bench) return 0 ;;
    --sanitizer:sanitizer|--bench:bench|--attention:attention|--apps:apps|--gridc:gridc) return 0 ;;
  esac
  return 1
}
SAN_TIMEOUT=${SAN_TIMEOUT:-180}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-180}
QUICK=""
[ "$MODE" = "--quick" ] && QUICK="--quick"
BUNDLE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Unpack the binaries and libraries (tools/gpu_bundle.sh packs them): beside run.sh if the bundle
# folder is writable, else inside OUTDIR.
PAYLOAD="$BUNDLE/payload"
mkdir -p "$PAYLOAD" 2>/dev/null && [ -w "$PAYLOAD" ] || PAYLOAD="$OUT/payload"
if [ ! -f "$PAYLOAD/.unpacked" ]; then
  mkdir -p "$PAYLOAD"
  if command -v xz >/dev/null; then
    tar -C "$PAYLOAD" -xJf "$BUNDLE/payload.tar.xz"
  else  # no xz binary: Python's tarfile reads xz through its lzma module
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
      "$BUNDLE/payload.tar.xz" "$PAYLOAD"
  fi || { echo "run.sh: cannot unpack payload" >&2; exit 1; }
  touch "$PAYLOAD/.unpacked"
fi

CUDA_LIBS=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
         /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && CUDA_LIBS="$CUDA_LIBS:$d"
done
# CUDA 13 libraries somewhere else (another toolkit prefix, or pip's nvidia-* wheels): look for
# the ones the binaries need if the usual places lack them.
# libnccl.so.2 (every CUDA binary links the NCCL communicator) and libcudnn.so.9 (dlopen'ed by the
# cuDNN attention path) often come only as pip wheels (nvidia-nccl-cu13, nvidia-cudnn-cu13).
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2 libcudnn.so.9; do
  LD_LIBRARY_PATH="${CUDA_LIBS#:}" ldconfig -p 2>/dev/null | grep -q "$lib" && continue
  found=""
  for d in ${CUDA_LIBS//:/ }; do [ -e "$d/$lib" ] && found=$d; done
  [ -n "$found" ] && continue
  roots="/usr/local /opt $(python3 -c 'import site; print(*site.getsitepackages())' 2>/dev/null)"
  hit=$(find $roots -maxdepth 6 -name "$lib" 2>/dev/null | head -1)
  if [ -n "$hit" ]; then CUDA_LIBS="$CUDA_LIBS:$(dirname "$hit")"
  else echo "run.sh: $lib not found on this machine (is CUDA 13 installed?)" >&2; fi
done
# The bundled libraries (libstdc++, OpenBLAS, ...) are for the bundled binaries only: Python and
# PyTorch run with the machine's own environment (PY below), never with these.
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH="$PAYLOAD/lib${CUDA_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -n "$ORIG_LD_LIBRARY_PATH" ]; then PY=(env "LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH" python3)
else PY=(env -u LD_LIBRARY_PATH python3); fi
export PATH="$PATH:/usr/local/cuda/bin"
STATUS="$OUT/status.txt"
: > "$STATUS"
FAILED=0

step() {  # step NAME TIMEOUT_S COMMAND...: runs, logs to OUT/NAME.log, records the exit code
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))${INFO_ONLY:+ (informational)}" | tee -a "$STATUS"
  [ $rc -ne 0 ] && [ -z "${INFO_ONLY:-}" ] && FAILED=1
  return 0
}

{
  echo "bundle commit: $(cat "$BUNDLE/COMMIT" 2>/dev/null)"
  date -u
  nvidia-smi 2>&1 || echo "nvidia-smi not available"
  nvcc --version 2>&1 | tail -2 || true
} > "$OUT/machine.txt"

# 1. tests
if want tests; then
  for t in "$PAYLOAD"/tests/test_cuda_*; do
    n=$(basename "$t")
    step "$n" "${TEST_TIMEOUT:-270}" "$t" --gtest_output="xml:$OUT/$n.xml"
    # Skipped for want of a device is a failure here: this script exists to run them on one.
    if grep -q "no CUDA device on this machine" "$OUT/$n.log"; then
      echo "$n SKIPPED: no CUDA device visible (driver, libcudart.so.13 on LD_LIBRARY_PATH?)" \
        | tee -a "$STATUS"
      FAILED=1
    fi
  done
fi
if want cpu_tests; then
  for t in "$PAYLOAD"/tests/test_*; do
    n=$(basename "$t")
    case "$n" in test_cuda_*) continue ;; esac
    # cpu tests are informational here: some read the source tree, absent here.
    INFO_ONLY=1 step "$n" 600 "$t" --gtest_output="xml:$OUT/$n.xml"
  done
fi

# 2. compute-sanitizer on a short run of the op tests (sizes of the test cases, f32 and bf16)
SAN=$(command -v compute-sanitizer || true)
[ -z "$SAN" ] && [ -x /usr/local/cuda/compute-sanitizer/compute-sanitizer ] && \
  SAN=/usr/local/cuda/compute-sanitizer/compute-sanitizer
if ! want sanitizer; then
  :
elif [ -n "$SAN" ] && [ -x "$PAYLOAD/tests/test_cuda_ops" ]; then
  # memcheck and synccheck over every op case (the device-error tests are left out: they trap on
  # purpose); racecheck over the kernels that share memory between threads.
  OPS='AllOps/CudaOps.*'
  SHARED='AllOps/CudaOps.MatchesCpuReference/attention*:AllOps/CudaOps.MatchesCpuReference/kv_cache*:AllOps/CudaOps.MatchesCpuReference/grouped*:AllOps/CudaOps.MatchesCpuReference/permute*:AllOps/CudaOps.MatchesCpuReference/rms_norm*:AllOps/CudaOps.MatchesCpuReference/cross_entropy*:AllOps/CudaOps.MatchesCpuReference/sp*:AllOps/CudaOps.MatchesCpuReference/embedding*'
  step sanitizer_memcheck "$SAN_TIMEOUT" "$SAN" --tool memcheck --error-exitcode 9 \
    "$PAYLOAD/tests/test_cuda_ops" --gtest_filter="$OPS"
  step sanitizer_racecheck "$SAN_TIMEOUT" "$SAN" --tool racecheck --error-exitcode 9 \
    "$PAYLOAD/tests/test_cuda_ops" --gtest_filter="$SHARED"
  step sanitizer_synccheck "$SAN_TIMEOUT" "$SAN" --tool synccheck --error-exitcode 9 \
    "$PAYLOAD/tests/test_cuda_ops" --gtest_filter="$OPS"
  step sanitizer_memcheck_determinism "$SAN_TIMEOUT" "$SAN" --tool memcheck --error-exitcode 9 \
    "$PAYLOAD/tests/test_cuda_ops" --gtest_filter='CudaDeterminism.*'
  [ -x "$PAYLOAD/tests/test_cuda_cudnn_attention" ] && \
    step sanitizer_memcheck_cudnn "$SAN_TIMEOUT" "$SAN" --tool memcheck --error-exitcode 9 \
      "$PAYLOAD/tests/test_cuda_cudnn_attention"
else
  echo "sanitizer skipped: compute-sanitizer not found" | tee -a "$STATUS"
  FAILED=1
fi

# 3. benchmark: C++ (moebench) and the PyTorch peer, lb alone and lb,sp,cp
STEPS=20
PRESETS=${PRESETS:-small 0.4b}
[ "$QUICK" = "--quick" ] && { STEPS=5; PRESETS="small"; }
want bench || PRESETS=""
for p in $PRESETS; do
  step "bench_${p}" "$BENCH_TIMEOUT" "$PAYLOAD/bin/moebench" --preset "$p" --device cuda --dtype bf16 \
    --steps "$STEPS" --json "$OUT/bench_${p}.json"
  if "${PY[@]}" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    step "torch_${p}_lb" "$BENCH_TIMEOUT" "${PY[@]}" "$BUNDLE/tools/bench_torch.py" --preset "$p" --losses lb \
      --steps "$STEPS" --json "$OUT/torch_${p}_lb.json"
    step "torch_${p}_lbspcp" "$BENCH_TIMEOUT" "${PY[@]}" "$BUNDLE/tools/bench_torch.py" --preset "$p" \
      --losses lb,sp,cp --steps "$STEPS" --json "$OUT/torch_${p}_lbspcp.json"
  else
    echo "torch peer skipped: no CUDA-enabled PyTorch" | tee -a "$STATUS"
  fi
done

# 3b. attention: native kernels vs cuDNN fused attention (--attention only: it is not part of
# "everything", which already exceeds one device call)
if [ "$MODE" = "--attention" ]; then
  step attention_bench "${ATTN_TIMEOUT:-540}" bash "$BUNDLE/tools/bench_attention.sh" \
    "$OUT/attention" "$PAYLOAD"
fi

# 3c. the apps end to end (--apps only): a short bf16 training run on the GPU, then the same
# checkpoint evaluated and decoded on cuda and on the CPU backend.
if want apps && [ -x "$PAYLOAD/bin/moetrain" ]; then
  RUN=/tmp/moe_gpu_apps_run
  rm -rf "$RUN"
  APP_STEPS=${APP_STEPS:-300}
  step apps_moetrain "${APP_TIMEOUT:-150}" "$PAYLOAD/bin/moetrain" \
    --config configs/replication_gridA.yaml --set train.device=cuda --set train.dtype=bf16 \
    --set train.max_steps="$APP_STEPS" --set run.save_every="$APP_STEPS" \
    --set run.eval_every=100 --set run.out_dir="$RUN"
  cp "$RUN/metrics.jsonl" "$OUT/apps_train_metrics.jsonl" 2>/dev/null || true
  CKPT=$(ls -d "$RUN"/checkpoints/step_* 2>/dev/null | tail -1)
  if [ -n "$CKPT" ]; then
    for dev in cuda cpu; do
      step "apps_moeeval_$dev" "${APP_TIMEOUT:-150}" "$PAYLOAD/bin/moeeval" --checkpoint "$CKPT" \
        --device "$dev" --ppl data/corpora/gutenberg_nltk/austen-persuasion.txt \
        --tasks piqa,arc_easy,hellaswag --task-dir data/zeroshot --limit "${APP_LIMIT:-400}" \
        --out "$OUT/apps_eval_$dev.json"
      step "apps_moeinfer_text_$dev" "${APP_TIMEOUT:-150}" "$PAYLOAD/bin/moeinfer" \
        --checkpoint "$RUN" --device "$dev" --prompt "It was a truth universally" \
        --max-new-tokens 48
      step "apps_moeinfer_bench_$dev" "${APP_TIMEOUT:-150}" "$PAYLOAD/bin/moeinfer" \
        --checkpoint "$RUN" --device "$dev" --bench -p 32,96 -n 32 -b 1,8 -r 5 -o md
    done
  else
    echo "apps: moetrain left no checkpoint in $RUN" | tee -a "$STATUS"
    FAILED=1
  fi
fi

# 3d. Grid C on the GPU (--gridc only). tools/ablate.sh expects BUILD/apps/ and a python3 with
# PyYAML: a folder of links to the bundle's apps, and the machine's python3 run without the
# bundle's libraries.
if want gridc; then
  LINKS=/tmp/moe_gpu_build
  mkdir -p "$LINKS/apps"
  for app in moetrain moeeval moeinfer; do ln -sf "$PAYLOAD/bin/$app" "$LINKS/apps/$app"; done
  printf '#!/bin/sh\nexec %s "$@"\n' "${PY[*]}" > "$LINKS/python3"
  chmod +x "$LINKS/python3"
  GRID_DIR=${GRID_DIR:-/tmp/moe_gpu_replication}
  export PYTHON="$LINKS/python3"
  step gridc "${GRIDC_TIMEOUT:-300}" bash tools/replication.sh grid-c \
    --out "$GRID_DIR" --build "$LINKS" --device cuda --threads 0 --seeds "${GRIDC_SEEDS:-1}"
  INFO_ONLY=1 step gridc_export 60 bash tools/replication.sh export \
    --out "$GRID_DIR" --to "$OUT/results"
fi

# Summary: one table of everything measured (missing files are reported as missing).
"${PY[@]}" - "$OUT" $PRESETS > "$OUT/summary.txt" 2>&1 <<'EOF'
import json, os, sys
out, presets = sys.argv[1], sys.argv[2:]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
for p in presets:
    b, t = load(f"bench_{p}.json"), load(f"torch_{p}_lb.json")
    print(f"== {p}")
    if b is None:
        print("  moebench: no result"); continue
    fpt = b["flops_per_token"]
    print(f"  device {b['device']} dtype {b['dtype']} batch {b['batch_size']} seq {b['seq_len']}")
    print(f"  params total {b['params_total']:,} active {b['params_active']:,} flops/token {fpt:.3e}")
    print(f"  C++ tokens/s {b['lb']['tokens_per_second']:.0f}  MFU vs peak {100*b['mfu_vs_peak']:.1f}%"
          + (f"  MFU vs measured GEMM ({b['gemm_tflops']:.0f} TFLOP/s) {100*b['mfu_vs_gemm']:.1f}%" if 'gemm_tflops' in b else ""))
    if "sp_cp_overhead" in b:
        print(f"  sp+cp overhead (C++): x{b['sp_cp_overhead']:.4f}")
    for fam, share in sorted(b["lb"]["breakdown_share"].items(), key=lambda kv: -kv[1]):
        print(f"    {fam:<16} {100*share:5.1f}%")
    if t is not None:
        tps = t["tokens_per_second"]
        print(f"  PyTorch tokens/s {tps:.0f} (MFU vs peak with the C++ FLOP count "
              f"{100*fpt*tps/1e12/b['peak_tflops']:.1f}%)  C++ / PyTorch = {b['lb']['tokens_per_second']/tps:.2f}x")
        t2 = load(f"torch_{p}_lbspcp.json")
        if t2 is not None:
            print(f"  sp+cp overhead (PyTorch): x{t2['step_seconds']/t['step_seconds']:.4f}")
EOF
cat "$OUT/summary.txt"
exit $FAILED
