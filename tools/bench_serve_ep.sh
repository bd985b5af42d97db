#!/usr/bin/env bash
# Measured expert-parallel serving throughput (docs/benchmarks.md, "Expert-parallel serving"):
# for each checkpoint, a routing trace of the MMLU validation split (the calibration text: other
# questions than the test split that is scored), then `mpirun -np P moeinfer --serve-ep mmlu` on
# the test split under round-robin and path-aware placement, the placements alternating within
# each of R repetitions. One thread per rank. The peer, in the same run: one process scoring the
# same questions with moeeval on P threads (--no-kv-cache, as the serving path has no KV cache),
# 3 runs, median.
#
#   tools/bench_serve_ep.sh [-np P] [-r R] [--limit N] [--out DIR] CHECKPOINT...
#
# Prints one markdown table per checkpoint (FORMAT=json|csv for those); the traces and logs stay
# in DIR (default: a temp dir).
set -euo pipefail
die() { echo "bench_serve_ep.sh: error: $*" >&2; exit 2; }
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
BUILD="${BUILD:-$ROOT/build}"
INFER="$BUILD/apps/moeinfer"
[ -x "$INFER" ] || die "$INFER not built (tools/build.sh)"
MPIRUN=$(command -v mpirun) || die "mpirun not found (tools/setup.sh installs openmpi-bin)"
NP=2; REPS=5; LIMIT=0; OUT=""; CKS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -np) NP="$2"; shift 2 ;;
    -r) REPS="$2"; shift 2 ;;
    --limit) LIMIT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -*) die "unknown option $1" ;;
    *) CKS+=("$1"); shift ;;
  esac
done
[ ${#CKS[@]} -gt 0 ] || die "usage: bench_serve_ep.sh [-np P] [-r R] [--limit N] [--out DIR] CHECKPOINT..."
TASKS="$ROOT/data/zeroshot"
[ -d "$TASKS/mmlu/test" ] || die "$TASKS/mmlu/test missing"
[ -n "$OUT" ] || OUT="$(mktemp -d)"
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
for ck in "${CKS[@]}"; do
  name=$(basename "$(cd "$ck" && pwd)")
  trace="$OUT/$name.mmlu-val.moetrace"
  "$INFER" --checkpoint "$ck" --trace "$trace" --text "$TASKS/mmlu/val" --threads "$(nproc)" >&2
  "$MPIRUN" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader \
    --mca btl_vader_single_copy_mechanism none -np "$NP" \
    "$INFER" --checkpoint "$ck" --serve-ep mmlu --task-dir "$TASKS" --limit "$LIMIT" \
    --placement round-robin,path-aware --calibration "$trace" -r "$REPS" --threads 1 \
    --log-level info -o "${FORMAT:-md}" > "$OUT/$name.serve.md" 2> "$OUT/$name.serve.log"
  cat "$OUT/$name.serve.md"
  EVAL="$BUILD/apps/moeeval"
  for run in 1 2 3; do
    OMP_NUM_THREADS="$NP" "$EVAL" --checkpoint "$ck" --task-dir "$TASKS" --tasks mmlu \
      --limit "$LIMIT" --no-kv-cache --threads "$NP" --log-level warn \
      --out "$OUT/$name.single-$run.json" > /dev/null
  done
  /usr/bin/python3 - "$OUT/$name" "$NP" <<'PY'
import json, statistics, sys
runs = [json.load(open(f"{sys.argv[1]}.single-{i}.json"))["moeeval"]["zero_shot_speed"]["mmlu"]
        for i in (1, 2, 3)]
sps = sorted(r["samples_per_second"] for r in runs)
print(f"\nPeer: one process, moeeval --no-kv-cache on {sys.argv[2]} threads, the same questions: "
      f"{statistics.median(sps):.2f} samples/s (median of 3: {', '.join(f'{x:.2f}' for x in sps)})")
PY
  echo
done
echo "raw outputs: $OUT" >&2
