#!/usr/bin/env bash
# Time of a full MMLU test pass (14,042 questions, 57 subjects) with moeeval, with and without the
# shared-context KV cache, on one checkpoint.
#
# Usage: tools/bench_mmlu.sh CHECKPOINT [RUNS=3] [THREADS=2] [extra moeeval flags ...]
#   env MOEEVAL (default build/apps/moeeval), TASK_DIR (default data/zeroshot).
# Each mode runs RUNS times (alternating, so that a load change hits both); a line per run and a
# last machine-readable line with the medians:
#   {"checkpoint": ..., "threads": T, "questions": N, "kv_cache": {"seconds": s, "questions_per_s": q,
#    "ms_per_question": m}, "no_kv_cache": {...}, "load_average": "..."}
# Seconds are moeeval's scoring time of the 57 subtasks (the JSON's zero_shot_speed.mmlu.seconds:
# tokenization and forward passes, not the checkpoint load). Only meaningful on an otherwise idle
# machine: the load average is printed alongside.
set -euo pipefail
CKPT="${1:?usage: bench_mmlu.sh CHECKPOINT [RUNS=3] [THREADS=2] [moeeval flags...]}"
RUNS="${2:-3}"; THREADS="${3:-2}"; shift $(( $# < 3 ? $# : 3 ))
MOEEVAL="${MOEEVAL:-build/apps/moeeval}"; TASK_DIR="${TASK_DIR:-data/zeroshot}"
[ -x "$MOEEVAL" ] || { echo "bench_mmlu: $MOEEVAL not built" >&2; exit 2; }
OUT="$(mktemp -d)"; trap 'rm -rf "$OUT"' EXIT
for run in $(seq 1 "$RUNS"); do
  for mode in kv_cache no_kv_cache; do
    flag=(); [ "$mode" = no_kv_cache ] && flag=(--no-kv-cache)
    OMP_WAIT_POLICY=PASSIVE "$MOEEVAL" --checkpoint "$CKPT" --task-dir "$TASK_DIR" --tasks mmlu \
      --threads "$THREADS" --log-level warn "${flag[@]}" "$@" --out "$OUT/$mode-$run.json" > /dev/null
    /usr/bin/python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['moeeval']['zero_shot_speed']['mmlu']; print(f\"$mode run $run: {s['seconds']:.1f} s, {s['samples_per_second']:.1f} questions/s, {1000*s['seconds_per_sample']:.2f} ms/question\")" "$OUT/$mode-$run.json"
  done
done
/usr/bin/python3 - "$OUT" "$CKPT" "$THREADS" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import glob, json, statistics, sys
out, ckpt, threads, load = sys.argv[1:]
res = {"checkpoint": ckpt, "threads": int(threads)}
for mode in ("kv_cache", "no_kv_cache"):
    runs = [json.load(open(f))["moeeval"]["zero_shot_speed"]["mmlu"]
            for f in sorted(glob.glob(f"{out}/{mode}-*.json"))]
    sec = statistics.median(r["seconds"] for r in runs)
    n = runs[0]["samples"]
    res["questions"] = n
    res[mode] = {"seconds": round(sec, 2), "questions_per_s": round(n / sec, 1),
                 "ms_per_question": round(1000 * sec / n, 3), "runs": len(runs)}
res["load_average"] = load
print(json.dumps(res))
PY
