#!/usr/bin/env bash
# The inference benchmarks of docs/benchmarks.md for one checkpoint: the latency table, routing
# traces of a calibration and a held-out text, the cross-device fraction of every placement at
# P = 2, 4, 8, and expert-cache hit rates at C = 25% and 50% of the experts (at least top_k) with
# LRU alone and with pathway prefetch.
#
#   tools/bench_infer.sh CHECKPOINT CALIB_TEXT HELDOUT_TEXT [--out DIR] [--threads N] [-r N]
#
# Prints markdown on stdout; the traces and raw outputs stay in DIR (default: a temp dir).
# The peers (transformers' generate(), llama.cpp) on the same model: tools/bench_infer_peers.sh.
set -euo pipefail
die() { echo "bench_infer.sh: error: $*" >&2; exit 2; }
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="${BUILD:-$(dirname "$HERE")/build}"
INFER="$BUILD/apps/moeinfer"
[ -x "$INFER" ] || die "$INFER not built"
[ $# -ge 3 ] || die "usage: bench_infer.sh CHECKPOINT CALIB_TEXT HELDOUT_TEXT [--out DIR] [--threads N] [-r N]"
CK="$1"; CALIB="$2"; HELD="$3"; shift 3
OUT=""; THREADS=2; REPS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    -r) REPS="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -n "$OUT" ] || OUT="$(mktemp -d)"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE
run() { "$INFER" --checkpoint "$CK" --threads "$THREADS" "$@"; }

echo "### Latency ($(nproc) cores, --threads $THREADS, -r $REPS)"
echo
echo "\`moeinfer --checkpoint $CK --bench -p 32,96 -n 32 -b 1,4 -r $REPS --threads $THREADS\`"
echo
run --bench -p 32,96 -n 32 -b 1,4 -r "$REPS" 2> "$OUT/bench.err"
echo
run --trace "$OUT/calib.moetrace" --text "$CALIB" 2> "$OUT/trace_calib.err"
run --trace "$OUT/heldout.moetrace" --text "$HELD" 2> "$OUT/trace_held.err"
echo "### Cross-device hops (calibration: $(basename "$CALIB"), held-out: $(basename "$HELD"))"
echo
run --placement round-robin,contiguous,path-aware --devices 2,4,8 \
  --calibration "$OUT/calib.moetrace" --heldout "$OUT/heldout.moetrace"
echo
read -r E K < <(python3 - "$OUT/calib.moetrace" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read(24)
m, e, k = struct.unpack("<III", b[12:24])
print(e, k)
PY
)
echo "### Expert cache (batch 1, -p 32 -n 64, -r $REPS; calibration trace for prefetch)"
echo
echo "| C | prefetch | hit rate | bytes read / token | decode tok/s |"
echo "|--:|---|--:|--:|--:|"
for C in $(( E / 4 > K ? E / 4 : K )) $(( E / 2 > K ? E / 2 : K )) "$E"; do
  for pf in none pathway; do
    line=$(run --bench -p 32 -n 64 -b 1 -r "$REPS" --expert-cache "$C" --prefetch "$pf" \
           --calibration "$OUT/calib.moetrace" -o csv 2>/dev/null | tail -n 1)
    python3 - "$line" "$C" "$E" "$pf" <<'PY'
import sys
f = sys.argv[1].split(",")
c, e, pf = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print(f"| {c} of {e} | {pf} | {100 * float(f[20]):.1f}% | {float(f[21]):.0f} | "
      f"{float(f[8]):.0f} ± {float(f[9]):.0f} |")
PY
  done
done
