# kill -9 and stuck runs (docs/reliability.md):
# 1. kill -9 at random moments of a run that saves a checkpoint every step, and on every other
#    start just after a checkpoint write begins, resuming after each, until it finishes: the result is
#    bit-identical to a straight run (weights, optimizer state, every metric record), and the
#    temporary checkpoint directories of the killed processes are removed at the next start.
# 2. A run killed before its first checkpoint restarts cleanly from step 0, by --resume (with its
#    config.yaml) or by a fresh start into the same directory, bit-identically to a straight run;
#    without config.yaml, --resume exits 2 saying what to do and changes nothing.
# 3. Start-up removes *.tmp-PID leftovers of dead processes only.
# 4. A second moetrain on a run directory in use exits 2.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" kill
pid=""
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT
start_time=$SECONDS

write_tiny_config "$WORK/tiny.yaml" "$WORK/unused" "$WORK/cache"
common=(--set train.max_steps=40 --set run.eval_every=10 --set run.keep_last=2)
t0_ns=$(date +%s%N)
"$MOETRAIN" --config "$WORK/tiny.yaml" "${common[@]}" --set run.save_every=40 \
  --set run.out_dir="$WORK/straight" > "$WORK/straight.log" 2>&1 \
  || { cat "$WORK/straight.log"; fail "the straight run failed"; }
# Kills land at random moments of a start: up to half the straight run's own duration (at
# least 50 ms in all), so that on a fast machine they still fall inside the run.
straight_ms=$(( ($(date +%s%N) - t0_ns) / 1000000 ))
[ "$straight_ms" -ge 50 ] || straight_ms=50

same_as_straight() {  # $1: run dir, $2: what
  for f in model.safetensors optimizer.safetensors; do
    cmp "$WORK/straight/checkpoints/step_00000040/$f" "$1/checkpoints/step_00000040/$f" \
      || fail "$2: $f differs from the straight run"
  done
  metrics_without_timing "$WORK/straight/metrics.jsonl" > "$WORK/a.jsonl"
  metrics_without_timing "$1/metrics.jsonl" > "$WORK/b.jsonl"
  diff "$WORK/a.jsonl" "$WORK/b.jsonl" > /dev/null || fail "$2: metrics differ from the straight run"
}

wait_started() {  # until the signal thread of process $1 runs (main() has begun)
  for _ in $(seq 1 500); do
    grep -qx moe-signals /proc/"$1"/task/*/comm 2>/dev/null && return
    sleep 0.01
  done
}

# ---- 1. kill -9 at random moments, resume each time ------------------------------------------
RANDOM=777
run="$WORK/killed"
kills=0 in_write=0 code=1 attempt=0 round=1
# The first start is a fresh run; each later one resumes (also after a kill before the first
# checkpoint: --resume then restarts from step 0 with the run's config.yaml).
while [ "$code" != 0 ]; do
  attempt=$((attempt + 1))
  [ "$attempt" -le 80 ] || fail "the run did not finish after 80 starts"
  if [ ! -d "$run" ]; then
    args=(--config "$WORK/tiny.yaml" "${common[@]}" --set run.save_every=1 --set run.out_dir="$run")
  elif [ ! -f "$run/config.yaml" ] && [ -z "$(ls "$run/checkpoints" 2>/dev/null | grep -v tmp)" ]; then
    rm -rf "$run"  # killed before it wrote anything worth keeping: start afresh
    args=(--config "$WORK/tiny.yaml" "${common[@]}" --set run.save_every=1 --set run.out_dir="$run")
  else
    args=(--resume "$run")
  fi
  "$MOETRAIN" "${args[@]}" > "$WORK/attempt$attempt.log" 2>&1 &
  pid=$!
  wait_started "$pid"
  if [ "$kills" -lt 25 ]; then
    if [ $((attempt % 2)) = 0 ]; then
      # Every other start: wait until this process begins a checkpoint write, then kill it
      # there (a tiny model's write takes milliseconds; random moments alone may miss them all).
      for _ in $(seq 1 20000); do
        compgen -G "$run/checkpoints/*.tmp-$pid" > /dev/null && break
        kill -0 "$pid" 2>/dev/null || break
      done
    else
      delay_ms=$(( (RANDOM * 32768 + RANDOM) % (straight_ms / 2 + 1) ))
      sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    fi
    kill -KILL "$pid" 2>/dev/null && kills=$((kills + 1))
  fi
  set +e
  wait "$pid"
  code=$?
  set -e
  pid=""
  case "$code" in
    0) ;;
    137) if ls "$run/checkpoints" 2>/dev/null | grep -q '\.tmp-'; then in_write=$((in_write + 1)); fi ;;
    *) cat "$WORK/attempt$attempt.log"; fail "start $attempt exited $code" ;;
  esac
  # Finished without a kill inside a checkpoint write: run the whole sequence again (at most 3
  # rounds), rather than pass having proved less than this test claims.
  if [ "$code" = 0 ] && [ "$in_write" = 0 ] && [ "$round" -lt 3 ]; then
    same_as_straight "$run" "kill -9 (round $round)"
    rm -rf "$run"; round=$((round + 1)); kills=0; code=1
  fi
done
same_as_straight "$run" "kill -9"
[ "$in_write" -ge 1 ] || fail "no kill landed inside a checkpoint write ($kills kills): the test proved less than it claims"
grep -h "left by process" "$WORK"/attempt*.log > /dev/null \
  || fail "the temporary directories of killed saves were never removed"
if find "$run" -name '*.tmp-*' | grep -q .; then fail "temporaries left after the run finished"; fi
echo "kill -9: $kills kills ($in_write inside a checkpoint write) in $attempt starts, round $round; result bit-identical"

# ---- 2. killed before the first checkpoint -----------------------------------------------------
stuck() {  # $1: run dir as a run killed during its first checkpoint save leaves it
  # Built from a finished run rather than by a timed kill (a tiny run can finish before any
  # kill lands): config.yaml, train.log, metrics.jsonl with 3 records and a cut-off fourth, and
  # checkpoints/ holding only the temporary directory of the dead process.
  cp -r "$WORK/straight" "$1"
  rm -rf "$1/checkpoints"
  mkdir -p "$1/checkpoints/step_00000040.tmp-$dead"
  echo partial > "$1/checkpoints/step_00000040.tmp-$dead/model.safetensors"
  head -n 3 "$WORK/straight/metrics.jsonl" > "$1/metrics.jsonl"
  head -c 50 <(sed -n 4p "$WORK/straight/metrics.jsonl") >> "$1/metrics.jsonl"
}
sleep 0 & dead=$!
wait "$dead"
kill -0 "$dead" 2>/dev/null && fail "PID $dead is still alive"
stuck "$WORK/stuck1"
"$MOETRAIN" --resume "$WORK/stuck1" > "$WORK/stuck1.log" 2>&1 \
  || { cat "$WORK/stuck1.log"; fail "--resume of a run stopped before its first checkpoint failed"; }
grep -q "stopped before its first checkpoint; starting it again from step 0" "$WORK/stuck1.log" \
  || { cat "$WORK/stuck1.log"; fail "--resume did not say it restarts from step 0"; }
same_as_straight "$WORK/stuck1" "--resume before the first checkpoint"
[ ! -e "$WORK/stuck1/checkpoints/step_00000040.tmp-$dead" ] || fail "the dead save's temporary was kept"
stuck "$WORK/stuck2"
"$MOETRAIN" --config "$WORK/tiny.yaml" "${common[@]}" --set run.save_every=0 \
  --set run.out_dir="$WORK/stuck2" > "$WORK/stuck2.log" 2>&1 \
  || { cat "$WORK/stuck2.log"; fail "a fresh start into a run stopped before its first checkpoint failed"; }
grep -q "replacing its metrics.jsonl and train.log" "$WORK/stuck2.log" \
  || { cat "$WORK/stuck2.log"; fail "the fresh start did not say it replaces the partial run"; }
same_as_straight "$WORK/stuck2" "fresh start over a run stopped before its first checkpoint"
# Killed before config.yaml was written: --resume cannot know the config and says what to do.
mkdir -p "$WORK/stuck3"
echo '{"type": "train", "step": 1}' > "$WORK/stuck3/metrics.jsonl"
before=$(tree_checksums "$WORK/stuck3")
set +e
"$MOETRAIN" --resume "$WORK/stuck3" > "$WORK/stuck3.log" 2>&1
code=$?
set -e
[ "$code" = 2 ] || { cat "$WORK/stuck3.log"; fail "--resume without config.yaml exited $code, expected 2"; }
grep -q "start it afresh with moetrain --config YOUR.yaml --set run.out_dir=$WORK/stuck3" "$WORK/stuck3.log" \
  || { cat "$WORK/stuck3.log"; fail "unclear error: $(cat "$WORK/stuck3.log")"; }
[ "$before" = "$(tree_checksums "$WORK/stuck3")" ] || fail "the refused --resume changed files"
echo "killed before the first checkpoint: --resume and a fresh start both restart from step 0"

# ---- 3. stale temporaries: only those of dead processes are removed ---------------------------
ck="$WORK/straight/checkpoints"
mkdir -p "$ck/step_00000099.tmp-$dead" "$ck/step_00000098.tmp-$$"
echo x > "$ck/step_00000099.tmp-$dead/model.safetensors"
echo x > "$WORK/straight/metrics.jsonl.tmp-$dead"
"$MOETRAIN" --resume "$WORK/straight" > "$WORK/stale.log" 2>&1 || { cat "$WORK/stale.log"; fail "resume failed"; }
[ ! -e "$ck/step_00000099.tmp-$dead" ] || fail "the temporary checkpoint of dead process $dead was kept"
[ ! -e "$WORK/straight/metrics.jsonl.tmp-$dead" ] || fail "the temporary file of dead process $dead was kept"
[ -d "$ck/step_00000098.tmp-$$" ] || fail "the temporary checkpoint of live process $$ was removed"
# ---- 4. two processes never share a run directory ---------------------------------------------
"$MOETRAIN" --resume "$WORK/straight" --set train.max_steps=1000000 > "$WORK/holder.log" 2>&1 &
pid=$!
for _ in $(seq 1 1000); do
  grep -q "training steps" "$WORK/holder.log" && break
  sleep 0.01
done
set +e
"$MOETRAIN" --resume "$WORK/straight" --set train.max_steps=1000000 > "$WORK/second.log" 2>&1
code=$?
set -e
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true; pid=""
[ "$code" = 2 ] || { cat "$WORK/second.log"; fail "a second process on a run directory exited $code, expected 2"; }
grep -q "is in use by another moetrain process" "$WORK/second.log" || { cat "$WORK/second.log"; fail "unclear error"; }

echo "PASS: kill -9 (bit-identical resume), stuck before the first checkpoint, stale temporaries," \
     "run-directory lock ($((SECONDS - start_time)) s)"
