#!/usr/bin/env bash
# bench_attention (tools/bench_attention.cpp, the native-vs-cuDNN attention benchmark) on the CPU
# backend with tiny shapes: it must time every length and write its JSON report; `cudnn` on the
# CPU and a bad --attention are usage errors (exit 2). Checks the benchmark, not performance (the
# cuDNN side needs a GPU: docs/benchmarks.md).
# Usage: bench_attention_cpu.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD_DIR="${1:?usage: bench_attention_cpu.sh BUILD_DIR SOURCE_DIR}"
BENCH="$BUILD_DIR/bench_attention"
[ -x "$BENCH" ] || { echo "bench_attention not built at $BENCH" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$BENCH" --device cpu --attention native --dtype fp32 --seq 8,19 --tokens 38 --heads 4 \
  --kv-heads 2 --head-dim 8 --runs 3 --reps 1 --json "$OUT/report.json"
python3 - "$OUT/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["device"] == "cpu" and r["attention"] == "native", r
res = r["results"]
assert [x["seq"] for x in res] == [8, 19], res
assert [x["batch"] for x in res] == [4, 2], res
for x in res:
    assert len(x["all_ms"]) == 3 and x["median_ms"] > 0 and x["tflops"] > 0, x
    assert sorted(x["all_ms"])[1] == x["median_ms"], x
print("bench_attention report ok")
PY
expect_usage() {  # expect_usage PATTERN ARGS...: exit 2 and PATTERN in the message
  local pattern=$1
  shift
  set +e
  "$BENCH" "$@" > "$OUT/err.txt" 2>&1
  local rc=$?
  set -e
  [ $rc -eq 2 ] || { echo "expected exit 2 for $*, got $rc" >&2; cat "$OUT/err.txt"; exit 1; }
  grep -q "$pattern" "$OUT/err.txt" || { echo "no '$pattern' for $*" >&2; cat "$OUT/err.txt"; exit 1; }
}
expect_usage "'cudnn' needs the CUDA backend" --device cpu --attention cudnn --seq 8
expect_usage "expected one of auto, native, cudnn, found 'flash'" --device cpu --attention flash
expect_usage "expected a comma-separated list" --device cpu --seq 8,x
echo "bench_attention cli ok"
