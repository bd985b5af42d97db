# A full disk (docs/reliability.md, "A full disk"): the run directory lives on a small tmpfs that
# is filled up while training. Two cases: (A) only a few KB are left, so a write to
# metrics.jsonl or train.log fails first; (B) a few hundred KB are left, so the metrics go on and
# the next checkpoint save fails. Each time moetrain must stop with exit code 1 and an error that
# names the failure and says how to continue, leave no temporary (*.tmp-*) file or directory, keep
# metrics.jsonl made of complete records and the newest checkpoint loadable; once space is freed,
# --resume finishes the run bit-identically to a straight run (weights and every metric record).
# Needs root (mount -t tmpfs): otherwise it is skipped (exit 77) and says why.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" diskfull
MNT="$WORK/mnt"
mkdir -p "$MNT"
if ! mount -t tmpfs -o size=16m tmpfs "$MNT" 2> "$WORK/mount.err"; then
  echo "SKIP: cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): $(cat "$WORK/mount.err")"
  exit 77
fi
trap 'umount "$MNT" 2>/dev/null; [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT

write_tiny_config "$WORK/tiny.yaml" "$WORK/unused" "$WORK/cache"
common=(--set train.max_steps=60 --set run.save_every=20 --set run.eval_every=20
        --set run.keep_last=1)
"$MOETRAIN" --config "$WORK/tiny.yaml" "${common[@]}" --set run.out_dir="$WORK/straight" \
  > "$WORK/straight.log" 2>&1 || { cat "$WORK/straight.log"; fail "the straight run failed"; }

# Fills the tmpfs, then frees $1 bytes.
fill_leaving() {
  dd if=/dev/zero of="$MNT/filler" bs=64k > /dev/null 2>&1 || true
  truncate -s "-$1" "$MNT/filler"
  sync
}

check_after_failure() {  # $1: run dir, $2: log, $3: case name
  grep -q "No space left on device" "$2" || { cat "$2"; fail "$3: the error does not name the full disk"; }
  grep -q "continue with moetrain --resume $1" "$2" || { cat "$2"; fail "$3: the error does not say how to continue"; }
  if find "$1" -name '*.tmp-*' | grep -q .; then
    find "$1" -name '*.tmp-*'; fail "$3: a temporary file or directory was left behind"
  fi
  python3 -c "
import json, sys
for n, line in enumerate(open(sys.argv[1]), 1):
    json.loads(line)  # every record complete
" "$1/metrics.jsonl" || fail "$3: metrics.jsonl holds a cut-off record"
}

run_case() {  # $1: case name, $2: bytes left free, $3: expected words in the error
  local run="$MNT/$1"
  rm -rf "$MNT"/*
  "$MOETRAIN" --config "$WORK/tiny.yaml" "${common[@]}" --set run.out_dir="$run" --stop-at-step 20 \
    > "$WORK/$1-first.log" 2>&1 || { cat "$WORK/$1-first.log"; fail "$1: the first 20 steps failed"; }
  fill_leaving "$2"
  set +e
  "$MOETRAIN" --resume "$run" > "$WORK/$1-full.log" 2>&1
  local code=$?
  set -e
  [ "$code" = 1 ] || { cat "$WORK/$1-full.log"; fail "$1: exit code $code on a full disk, expected 1"; }
  grep -q "$3" "$WORK/$1-full.log" || { cat "$WORK/$1-full.log"; fail "$1: expected '$3' in the error"; }
  check_after_failure "$run" "$WORK/$1-full.log" "$1"
  echo "$1: $(grep -o 'error: .*' "$WORK/$1-full.log" | cut -c1-300)"
  rm -f "$MNT/filler"
  "$MOETRAIN" --resume "$run" > "$WORK/$1-resume.log" 2>&1 \
    || { cat "$WORK/$1-resume.log"; fail "$1: resuming after freeing space failed"; }
  for f in model.safetensors optimizer.safetensors; do
    cmp "$WORK/straight/checkpoints/step_00000060/$f" "$run/checkpoints/step_00000060/$f" \
      || fail "$1: $f differs from the straight run"
  done
  metrics_without_timing "$WORK/straight/metrics.jsonl" > "$WORK/a.jsonl"
  metrics_without_timing "$run/metrics.jsonl" > "$WORK/b.jsonl"
  diff "$WORK/a.jsonl" "$WORK/b.jsonl" > /dev/null || fail "$1: metrics differ from the straight run"
}

run_case metrics 4096 "Training stopped after step"
run_case checkpoint 409600 "cannot save the checkpoint of step 40"
echo "PASS: a full disk stops the run cleanly (exit 1, no temporaries, complete records) and the" \
     "resumed run is bit-identical to a straight one, in both cases"
