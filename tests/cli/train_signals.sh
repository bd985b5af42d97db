# Stop signals (docs/reliability.md, "Signals"): 50 SIGINT/SIGTERM sent at random moments of 50
# short runs of a tiny model (each resuming the previous one) give 50 exits with code 130, each
# after saving a new, complete checkpoint that the next run resumes from; no run crashes (the
# old handler-based code corrupted the heap about 1 run in 10, rc 134, when a signal landed on
# oneDNN's JIT GEMM). While each run trains, every one of its threads must have SIGHUP, SIGINT
# and SIGTERM blocked and no handler may be installed for them (/proc/PID/task/*/status): the
# signals are taken by sigwait in one thread, so no handler can run on a GEMM thread.
# The delays count from the start of the signal thread, so they fall in data loading, model
# set-up, training steps, validation and checkpoint writing alike.
# Then two signals at once: the second ends the process at once (130), and the newest checkpoint
# still resumes.
# MOE_SIGNAL_RUNS overrides the number of runs (default 50).
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" signals
pid=""
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT
RUNS=${MOE_SIGNAL_RUNS:-50}
start_time=$SECONDS

write_tiny_config "$WORK/tiny.yaml" "$WORK/run" "$WORK/cache"
# Two threads, so that OpenMP/oneDNN worker threads exist and their masks are checked too.
common=(--set train.threads=2 --set train.max_steps=1000000 --set run.log_every=5
        --set run.eval_every=50 --set run.save_every=200 --set run.keep_last=2)
"$MOETRAIN" --config "$WORK/tiny.yaml" "${common[@]}" --stop-at-step 1 > "$WORK/first.log" 2>&1 \
  || { cat "$WORK/first.log"; fail "the first run failed"; }

latest_step() {
  local d
  d=$(ls -d "$WORK/run/checkpoints"/step_???????? 2>/dev/null | sort | tail -n 1)
  [ -n "$d" ] || { echo -1; return; }
  echo $((10#${d##*step_}))
}

# Checks the signal mask of every thread of process $1 but the signal thread; prints how many.
check_masks() {
  local pid=$1 want=$(( (1 << 0) | (1 << 1) | (1 << 14) ))  # SIGHUP, SIGINT, SIGTERM bits
  local status blk cgt n=0
  for status in /proc/"$pid"/task/*/status; do
    # The thread in sigwait shows the signals it waits for as unblocked; it runs no handler.
    [ "$(cat "${status%/status}/comm" 2>/dev/null)" = moe-signals ] && continue
    blk=$(awk '/^SigBlk:/ {print $2}' "$status" 2>/dev/null) || continue
    cgt=$(awk '/^SigCgt:/ {print $2}' "$status" 2>/dev/null) || continue
    [ -n "$blk" ] || continue
    (( (0x$blk & want) == want )) || fail "thread $status has SigBlk $blk: a stop signal is not blocked"
    (( (0x$cgt & want) == 0 )) || fail "thread $status has SigCgt $cgt: a handler is installed for a stop signal"
    n=$((n + 1))
  done
  echo "$n"
}

prev=$(latest_step)
[ "$prev" = 1 ] || fail "expected a checkpoint at step 1, found step $prev"
threads_seen=0
RANDOM=4242  # reproducible signal times and kinds
for i in $(seq 1 "$RUNS"); do
  sig=$([ $((RANDOM % 2)) = 0 ] && echo INT || echo TERM)
  delay=$(printf '0.%03d' $((RANDOM % 1000)))
  "$MOETRAIN" --resume "$WORK/run" "${common[@]}" > "$WORK/run$i.log" 2>&1 &
  pid=$!
  # A signal in the first milliseconds, before main() has blocked them, takes its default action
  # (nothing is written by then): the random delay counts from the moment the signal thread is up.
  for _ in $(seq 1 500); do
    grep -qx moe-signals /proc/"$pid"/task/*/comm 2>/dev/null && break
    sleep 0.01
  done
  sleep "$delay"
  # Mask check while it runs (it may still be starting up: then fewer threads exist).
  n=$(check_masks "$pid")
  [ "$n" -gt "$threads_seen" ] && threads_seen=$n
  kill -"$sig" "$pid"
  set +e
  wait "$pid"
  code=$?
  set -e
  pid=""
  [ "$code" = 130 ] || { cat "$WORK/run$i.log"; fail "run $i (SIG$sig after ${delay}s) exited $code, expected 130"; }
  grep -q "stopped by signal" "$WORK/run$i.log" || { cat "$WORK/run$i.log"; fail "run $i did not report the signal"; }
  grep -q "resumed from .*at step $prev " "$WORK/run$i.log" \
    || { cat "$WORK/run$i.log"; fail "run $i did not resume from the checkpoint of step $prev"; }
  now=$(latest_step)
  [ "$now" -gt "$prev" ] || { cat "$WORK/run$i.log"; fail "run $i saved no new checkpoint (latest step $now)"; }
  grep -q "saved checkpoint .*step_$(printf '%08d' "$now")" "$WORK/run$i.log" \
    || fail "run $i: the newest checkpoint step_$now was not saved by it"
  ls "$WORK/run/checkpoints" | grep -q tmp && fail "run $i left a temporary checkpoint directory"
  prev=$now
done
# A second signal stops at once, without saving (different signals, so they cannot merge).
"$MOETRAIN" --resume "$WORK/run" "${common[@]}" > "$WORK/twice.log" 2>&1 &
pid=$!
for _ in $(seq 1 500); do
  grep -qx moe-signals /proc/"$pid"/task/*/comm 2>/dev/null && break
  sleep 0.01
done
sleep 0.3
kill -INT "$pid"
kill -TERM "$pid"
set +e
wait "$pid"
code=$?
set -e
pid=""
[ "$code" = 130 ] || { cat "$WORK/twice.log"; fail "two signals: exit code $code, expected 130"; }
grep -q "again: stopping now without saving" "$WORK/twice.log" \
  || grep -q "stopped by signal" "$WORK/twice.log" \
  || { cat "$WORK/twice.log"; fail "two signals: neither an immediate nor a saving stop was reported"; }
grep -q "again: stopping now without saving" "$WORK/twice.log" || echo "note: the run saved before the second signal arrived"
# The last checkpoint is complete: one more step from it works.
prev=$(latest_step)
"$MOETRAIN" --resume "$WORK/run" "${common[@]}" --stop-at-step $((prev + 1)) > "$WORK/last.log" 2>&1 \
  || { cat "$WORK/last.log"; fail "resuming the last signalled checkpoint failed"; }
[ "$threads_seen" -ge 2 ] || fail "never saw more than $threads_seen thread(s): the mask check checked nothing"
echo "PASS: $RUNS signals -> $RUNS exits 130 with $RUNS new checkpoints (up to step $prev;" \
     "up to $threads_seen threads checked per run) in $((SECONDS - start_time)) s"
