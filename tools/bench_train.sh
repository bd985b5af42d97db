#!/usr/bin/env bash
# Training throughput of moetrain against the PyTorch peer (tools/reference/train_torch.py) on the
# same config and the same number of CPU threads.
#
# Usage: tools/bench_train.sh CONFIG.yaml [THREADS=2] [STEPS=20] [WARMUP=3] [key=value ...]
#   (the key=value pairs are passed as --set overrides to both implementations)
#   env MOETRAIN (default build/apps/moetrain), PYTHON (default /usr/bin/python3),
#       BENCH_DIR (default a fresh temporary directory; the moetrain run directory goes there).
#
# moetrain runs `--config CONFIG --set train.max_steps=STEPS --set run.out_dir=DIR
# --set train.threads=THREADS --set run.log_every=1 --set run.eval_every=0 --set run.save_every=0`
# (validation off; its tok_per_s times the training step alone, so the one final checkpoint and
# the tokenization do not count), and its tokens/s is the median of the "tok_per_s" of the train
# records of DIR/metrics.jsonl after the first WARMUP steps. train_torch.py runs the same steps on
# random tokens of the config's vocabulary (the token ids do not change the work per step) and
# reports the same median. The config should set model.vocab_size so both train the same model.
#
# Output: one line per run and a last machine-readable line
#   {"config": ..., "threads": T, "moetrain_tokens_per_s": ..., "torch_tokens_per_s": ..., "ratio": ...,
#    "torch_default_tokens_per_s": ..., "ratio_vs_torch_default": ...}
# (ratio = moetrain / torch). Timings are only meaningful on an otherwise idle machine: the load
# average is printed alongside.
#
# Two PyTorch figures, two ratios:
#  - "torch": the reference with the same OpenMP wait policy as moetrain: OMP_WAIT_POLICY from the
#    environment, passive when unset (moetrain's own default, see lib/core/omp_wait_policy.h).
#    This is the matched comparison, and "ratio" is moetrain over it.
#  - "torch_default": the reference as it runs out of the box (OMP_WAIT_POLICY and GOMP_SPINCOUNT
#    unset, so libgomp spins). On the 2-core development machine PyTorch 1.13 runs 2.5-3x slower
#    this way (its spinning OpenMP threads take the cores from its own autograd thread); this is
#    the 1.4k-1.5k tokens/s the CPU-trainer issue quotes. "ratio_vs_torch_default" is moetrain
#    (as it runs by default) over it. BENCH_TORCH_DEFAULT=0 skips this run.
set -euo pipefail
CONFIG="${1:?usage: tools/bench_train.sh CONFIG.yaml [THREADS] [STEPS] [WARMUP]}"
THREADS="${2:-2}"
STEPS="${3:-20}"
WARMUP="${4:-3}"
SETS=()
for assignment in "${@:5}"; do SETS+=(--set "$assignment"); done
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOETRAIN="${MOETRAIN:-$ROOT/build/apps/moetrain}"
PYTHON="${PYTHON:-/usr/bin/python3}"
[ -f "$CONFIG" ] || { echo "bench_train: config $CONFIG not found" >&2; exit 2; }
[ -x "$MOETRAIN" ] || { echo "bench_train: $MOETRAIN not built (cmake --build build --target moetrain)" >&2; exit 2; }
"$PYTHON" -c "import torch" 2>/dev/null || { echo "bench_train: $PYTHON has no torch (tools/setup.sh --torch)" >&2; exit 2; }
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
BENCH_DIR="${BENCH_DIR:-$(mktemp -d /tmp/bench_train.XXXXXX)}"
mkdir -p "$BENCH_DIR"
RUN_DIR="$BENCH_DIR/moetrain_run"
rm -rf "$RUN_DIR"

echo "bench_train: $CONFIG, $THREADS threads, $STEPS steps (median after $WARMUP), OMP_WAIT_POLICY=$OMP_WAIT_POLICY; load average $(cut -d' ' -f1-3 /proc/loadavg)"

"$MOETRAIN" --config "$CONFIG" --set train.max_steps="$STEPS" --set run.out_dir="$RUN_DIR" \
  --set train.threads="$THREADS" --set run.log_every=1 --set run.eval_every=0 \
  --set run.save_every=0 "${SETS[@]}" > "$BENCH_DIR/moetrain.log" 2>&1 ||
  { echo "bench_train: moetrain failed, log: $BENCH_DIR/moetrain.log" >&2; tail -20 "$BENCH_DIR/moetrain.log" >&2; exit 1; }
MOE_RATE="$("$PYTHON" - "$RUN_DIR/metrics.jsonl" "$WARMUP" <<'EOF'
import json, statistics, sys
rates = []
with open(sys.argv[1]) as src:
    for line in src:
        rec = json.loads(line)
        if rec.get("type", "train") == "train" and "tok_per_s" in rec and rec["step"] > int(sys.argv[2]):
            rates.append(rec["tok_per_s"])
if not rates:
    sys.exit("bench_train: no train records with tok_per_s after the warm-up in " + sys.argv[1])
print(statistics.median(rates))
EOF
)"
echo "moetrain: $MOE_RATE tokens/s"

"$PYTHON" "$ROOT/tools/reference/train_torch.py" --config "$CONFIG" --threads "$THREADS" \
  --steps "$STEPS" --warmup "$WARMUP" --set train.max_steps="$STEPS" "${SETS[@]}" \
  > "$BENCH_DIR/torch.json" 2> "$BENCH_DIR/torch.log" ||
  { echo "bench_train: train_torch.py failed, log: $BENCH_DIR/torch.log" >&2; tail -20 "$BENCH_DIR/torch.log" >&2; exit 1; }
torch_rate() { "$PYTHON" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["tokens_per_s"])' "$1"; }
TORCH_RATE="$(torch_rate "$BENCH_DIR/torch.json")"
echo "torch:    $TORCH_RATE tokens/s (OMP_WAIT_POLICY=$OMP_WAIT_POLICY, as moetrain)"

TORCH_DEFAULT_RATE=0
if [ "${BENCH_TORCH_DEFAULT:-1}" != 0 ]; then
  env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$PYTHON" "$ROOT/tools/reference/train_torch.py" \
    --config "$CONFIG" --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" \
    --set train.max_steps="$STEPS" "${SETS[@]}" \
    > "$BENCH_DIR/torch_default.json" 2> "$BENCH_DIR/torch_default.log" ||
    { echo "bench_train: train_torch.py (defaults) failed, log: $BENCH_DIR/torch_default.log" >&2; exit 1; }
  TORCH_DEFAULT_RATE="$(torch_rate "$BENCH_DIR/torch_default.json")"
  echo "torch:    $TORCH_DEFAULT_RATE tokens/s (PyTorch's own OpenMP defaults)"
fi

"$PYTHON" -c '
import json, sys
cfg, threads, moe, torch_rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
torch_default = float(sys.argv[6])
out = {"config": cfg, "threads": threads, "moetrain_tokens_per_s": moe,
       "torch_tokens_per_s": torch_rate, "ratio": moe / torch_rate,
       "omp_wait_policy": sys.argv[5]}
if torch_default > 0:
    out["torch_default_tokens_per_s"] = torch_default
    out["ratio_vs_torch_default"] = moe / torch_default
out["loadavg_1m"] = float(open("/proc/loadavg").read().split()[0])
print(json.dumps(out))
' "$CONFIG" "$THREADS" "$MOE_RATE" "$TORCH_RATE" "$OMP_WAIT_POLICY" "$TORCH_DEFAULT_RATE"
