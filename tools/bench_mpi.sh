#!/usr/bin/env bash
# Data-parallel throughput on the CPU: 1 rank x 2 threads against 2 ranks x 1 thread (mpirun) on
# the same global batch (the 1-rank run accumulates 2 micro-batches, each rank of the 2-rank run
# trains 1), and the share of the 2-rank step spent waiting for the gradient all-reduce that the
# backward pass did not hide (metrics.jsonl "comm_wait_s").
#
# Usage: tools/bench_mpi.sh [CONFIG=tools/reference/bench_cpu_d128.yaml] [STEPS=20] [WARMUP=3] [REPEATS=3]
#   env MOETRAIN (default build/apps/moetrain), BENCH_DIR (default a fresh temporary directory).
# Each run: --set train.max_steps=STEPS run.log_every=1 run.eval_every=0 run.save_every=0; its
# tokens/s is the median of the train records' tok_per_s after WARMUP steps (the training step
# alone: tokenization and the final checkpoint do not count). The figure of each layout is the
# median over REPEATS runs. Last line: JSON {"one_rank_tokens_per_s", "two_ranks_tokens_per_s",
# "ratio", "comm_wait_share"}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${1:-$ROOT/tools/reference/bench_cpu_d128.yaml}"
STEPS="${2:-20}"
WARMUP="${3:-3}"
REPEATS="${4:-3}"
MOETRAIN="${MOETRAIN:-$ROOT/build/apps/moetrain}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$DIR"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
COMMON=(--config "$CONFIG" --set train.max_steps="$STEPS" --set run.log_every=1
        --set run.eval_every=0 --set run.save_every=0 --set data.cache_dir="$DIR/cache")
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader
        --mca btl_vader_single_copy_mechanism none)
summary() {  # summary METRICS: "tok_per_s comm_wait_s step_s" medians after WARMUP
  python3 - "$1" "$WARMUP" <<'PY'
import json, statistics, sys
recs = [r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "train"][int(sys.argv[2]):]
tps = statistics.median(r["tok_per_s"] for r in recs)
wait = statistics.median(r.get("comm_wait_s", 0.0) for r in recs)
print(tps, wait)
PY
}
cd "$ROOT"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
one=() two=() share=()
for i in $(seq 1 "$REPEATS"); do
  OMP_NUM_THREADS=2 "$MOETRAIN" "${COMMON[@]}" --set run.out_dir="$DIR/one$i" --set train.threads=2 \
    --set train.grad_accum=2 > "$DIR/one$i.log" 2>&1 || { cat "$DIR/one$i.log"; exit 1; }
  OMP_NUM_THREADS=1 timeout 600 "${MPIRUN[@]}" -np 2 "$MOETRAIN" "${COMMON[@]}" \
    --set run.out_dir="$DIR/two$i" --set train.threads=1 --set train.grad_accum=1 \
    > "$DIR/two$i.log" 2>&1 || { cat "$DIR/two$i.log"; exit 1; }
  read -r t1 _ < <(summary "$DIR/one$i/metrics.jsonl")
  read -r t2 w2 < <(summary "$DIR/two$i/metrics.jsonl")
  tokens=$(python3 -c "import yaml; c = yaml.safe_load(open('$CONFIG')); t = c['train']; print(2 * t['batch_size'] * t['seq_len'])")
  s=$(python3 -c "print($w2 / ($tokens / $t2))")
  echo "run $i: 1 rank x 2 threads $t1 tok/s; 2 ranks x 1 thread $t2 tok/s, all-reduce wait $w2 s of $(python3 -c "print($tokens / $t2)") s per step (share $s)"
  one+=("$t1") two+=("$t2") share+=("$s")
done
python3 - "${one[*]}" "${two[*]}" "${share[*]}" <<'PY'
import json, statistics, sys
one, two, share = (statistics.median(map(float, a.split())) for a in sys.argv[1:4])
print(json.dumps({"one_rank_tokens_per_s": round(one), "two_ranks_tokens_per_s": round(two),
                  "ratio": round(two / one, 3), "comm_wait_share": round(share, 4)}))
PY
