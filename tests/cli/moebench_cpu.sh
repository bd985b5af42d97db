#!/usr/bin/env bash
# moebench end to end on the CPU backend with the tiny preset: it must run every phase (timed
# steps of lb and lb,sp,cp, the op profile, the GEMM rate) and write a JSON report with every
# figure the GPU benchmark reports. Checks the benchmark itself, not performance.
# Usage: moebench_cpu.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD_DIR="${1:?usage: moebench_cpu.sh BUILD_DIR SOURCE_DIR}"
BENCH="$BUILD_DIR/apps/moebench"
[ -x "$BENCH" ] || { echo "moebench not built at $BENCH" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$BENCH" --preset tiny --device cpu --dtype fp32 --steps 1 --warmup 0 --profile-steps 1 \
  --gemm-size 64 --json "$OUT/report.json"
python3 - "$OUT/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for key in ("device", "tokens_per_second", "flops_per_token", "mfu_vs_peak", "gemm_tflops",
            "mfu_vs_gemm", "sp_cp_overhead", "params_total", "params_active"):
    assert key in r or key in r["lb"], f"report lacks {key}"
assert r["device"] == "cpu", r["device"]
# On CPU the MFU is against this CPU's peak, not a GPU's (it was 989 TFLOP/s before).
assert "FLOP/cycle" in r["peak_basis"] and 0 < r["peak_tflops"] < 50, (r["peak_basis"], r["peak_tflops"])
assert 0 < r["mfu_vs_peak"] <= 1, r["mfu_vs_peak"]
assert r["lb"]["tokens_per_second"] > 0 and r["lb_sp_cp"]["step_seconds"] > 0
share = r["lb"]["breakdown_share"]
assert abs(sum(share.values()) - 1.0) < 1e-6, share
for family in ("matmul", "grouped_matmul", "attention", "optimizer"):
    assert share.get(family, 0) > 0, f"no time recorded for {family}: {share}"
assert r["lb_sp_cp"]["breakdown_share"].get("loss_sp", 0) > 0, "sp ops missing from lb,sp,cp"
assert r["lb_sp_cp"]["breakdown_share"].get("loss_cp", 0) > 0, "cp ops missing from lb,sp,cp"
print("moebench report ok")
PY
# A bad option is a usage error (exit 2), not a crash.
set +e
"$BENCH" --preset nonsense --device cpu > "$OUT/err.txt" 2>&1
rc=$?
set -e
[ $rc -eq 2 ] || { echo "expected exit 2 for a bad preset, got $rc" >&2; cat "$OUT/err.txt"; exit 1; }
grep -q "tiny, small or 0.4b" "$OUT/err.txt" || { cat "$OUT/err.txt"; exit 1; }
