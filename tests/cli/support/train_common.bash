# Shared helpers of the moetrain command-line tests (sourced, not run by ctest).
# Usage in a test:  source "$SRC/tests/cli/support/train_common.bash"; setup_cli_test BUILD SRC NAME
set -euo pipefail

FORTUNES=/usr/share/games/fortunes

fail() { echo "FAIL: $*" >&2; exit 1; }

setup_cli_test() {
  BUILD=$(cd "$1" && pwd)
  SRC=$(cd "$2" && pwd)
  MOETRAIN="$BUILD/apps/moetrain"
  [ -x "$MOETRAIN" ] || fail "moetrain not built at $MOETRAIN"
  for f in computers people science wisdom; do
    [ -f "$FORTUNES/$f" ] || fail "$FORTUNES/$f missing: run tools/setup.sh (Debian package fortunes)"
  done
  WORK="$BUILD/tmp/cli-$3-$$"
  rm -rf "$WORK"
  mkdir -p "$WORK"
  [ -n "${KEEP_WORK:-}" ] || trap 'rm -rf "$WORK"' EXIT
}

# A tiny model on three fortunes files (~520 KB of real English), validation on a fourth.
# $1: config path; $2: run.out_dir; $3: data.cache_dir (shared between runs so that they use one
# tokenizer and one set of shards).
write_tiny_config() {
  cat > "$1" <<YAML
model:
  arch: vanilla
  d_model: 32
  n_layers: 2
  n_heads: 2
  n_kv_heads: 1
  n_experts: 4
  top_k: 2
  expert_ffn_dim: 32
  max_seq_len: 32
loss:
  losses: [lb, z, sp, cp]
data:
  train: [$FORTUNES/computers, $FORTUNES/people, $FORTUNES/science]
  valid: [$FORTUNES/wisdom]
  tokenizer_vocab_size: 512
  tokenizer_train_bytes: 300000
  cache_dir: $3
train:
  device: cpu
  threads: 1   # robust against oversubscribed CI machines (OpenMP spin-waits)
  batch_size: 4
  seq_len: 32
  max_steps: 10
  lr: 1.0e-2
  warmup_steps: 2
run:
  out_dir: $2
  log_every: 1
  eval_every: 4
  eval_batches: 4
  save_every: 100
  keep_last: 2
YAML
}

# Checksums of every file below a directory (sorted), to prove a failed run changed nothing.
tree_checksums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }

# metrics.jsonl without the fields that measure time.
metrics_without_timing() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    r.pop("tok_per_s", None)
    r.pop("mfu", None)
    print(json.dumps(r, sort_keys=True))
PY
}
