# moetrain under mpirun (CPU ranks over MPI; skipped, exit 77, when the build or machine has no
# MPI). Every launch is bounded by `timeout`.
#  1. 2 ranks train 6 steps: exit 0, one metrics.jsonl and train.log (rank 0's), checkpoints; MFU
#     is against both ranks' peaks (FLOPs per token implied by mfu and tokens/s match 1 rank's).
#  2. Resume across layouts: 2 ranks (grad_accum 2) stop at step 3; 1 rank with grad_accum 4, and
#     4 ranks with ZeRO-1 and grad_accum 1 (the same global batch), continue to step 6 and log the
#     same losses as the uninterrupted 2-rank run.
#  3. Ranks launched with different configs: a clear error from rank 0 before step 1, exit != 0,
#     no checkpoint, no training record.
#  4. A rank killed with SIGKILL mid-run: the job ends non-zero within a bounded time, and every
#     checkpoint directory left behind is complete (resumable).
#  5. A rank that hangs (SIGSTOP) mid-run: rank 0's watchdog (run.step_timeout_s) ends the job.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" mpi
MPIRUN=$(command -v mpirun || true)
[ -n "$MPIRUN" ] || { echo "SKIP: mpirun not installed (tools/setup.sh installs openmpi-bin)"; exit 77; }
grep -q "^MOE_WITH_MPI_BUILT:INTERNAL=ON" "$BUILD/CMakeCache.txt" || { echo "SKIP: built without MPI"; exit 77; }
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
mpirun_np() {  # mpirun_np N args...: bounded launch of N ranks of moetrain
  local np=$1; shift
  timeout -k 10 240 "$MPIRUN" --allow-run-as-root --oversubscribe --bind-to none \
    --mca btl self,vader --mca btl_vader_single_copy_mechanism none -np "$np" "$MOETRAIN" "$@"
}
write_tiny_config "$WORK/tiny.yaml" "$WORK/unused" "$WORK/cache"
# Prepare the shared data cache once, so the timed launches below only train.
"$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/warm" --set train.max_steps=1 \
  --peak-tflops 1 > "$WORK/warm.log" 2>&1 || { cat "$WORK/warm.log"; fail "warm-up run failed"; }

# 1. Two ranks.
mpirun_np 2 --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/dp" --set train.max_steps=6 \
  --peak-tflops 1 --set run.save_every=3 --set train.grad_accum=2 > "$WORK/dp.log" 2>&1 || { cat "$WORK/dp.log"; fail "2-rank run failed"; }
grep -q "data parallel over 2 ranks" "$WORK/dp.log" || fail "no data-parallel line: $(cat "$WORK/dp.log")"
[ "$(grep -c '"type":"train"' "$WORK/dp/metrics.jsonl")" = 6 ] || fail "expected 6 train records"
! grep -q "rank 1.*info" "$WORK/dp.log" || fail "rank 1 logged info lines"
for s in 3 6; do
  [ -f "$WORK/dp/checkpoints/step_0000000$s/manifest.json" ] || fail "no complete checkpoint $s"
done
python3 - "$WORK/warm/metrics.jsonl" "$WORK/dp/metrics.jsonl" <<'PY' || fail "2-rank MFU not against 2 ranks' peaks"
import json, sys
def flops_per_token(path, ranks):  # mfu = FLOPs/token x tokens/s / (peak x ranks), peak 1 TFLOP/s
    r = [r for r in map(json.loads, open(path)) if r["type"] == "train"][-1]
    return r["mfu"] * 1e12 * ranks / r["tok_per_s"]
one, two = flops_per_token(sys.argv[1], 1), flops_per_token(sys.argv[2], 2)
print(f"FLOPs per token implied by MFU: 1 rank {one:.6g}, 2 ranks {two:.6g}")
assert abs(one - two) <= 1e-6 * one, (one, two)
PY

# 2. Stop the 2-rank run at step 3, continue on 1 rank and on 4 ZeRO-1 ranks.
for layout in 1 4; do
  mpirun_np 2 --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/split$layout" \
    --set train.max_steps=6 --set train.grad_accum=2 --stop-at-step 3 > "$WORK/split$layout.log" 2>&1 \
    || { cat "$WORK/split$layout.log"; fail "first half failed"; }
done
timeout -k 10 240 "$MOETRAIN" --resume "$WORK/split1" --set train.grad_accum=4 \
  > "$WORK/resume1.log" 2>&1 || { cat "$WORK/resume1.log"; fail "1-rank resume failed"; }
mpirun_np 4 --resume "$WORK/split4" --set train.grad_accum=1 --set train.zero=1 \
  > "$WORK/resume4.log" 2>&1 || { cat "$WORK/resume4.log"; fail "4-rank ZeRO-1 resume failed"; }
grep -q "ZeRO-1" "$WORK/resume4.log" || fail "the 4-rank resume did not use ZeRO-1"
for layout in 1 4; do
python3 - "$WORK/dp/metrics.jsonl" "$WORK/split$layout/metrics.jsonl" $layout <<'PY' || fail "resumed losses differ"
import json, sys
def losses(p):
    return {r["step"]: r for r in map(json.loads, open(p)) if r["type"] == "train"}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert sorted(a) == sorted(b) == list(range(1, 7)), (sorted(a), sorted(b))
worst = max(abs(a[s][k] - b[s][k]) / max(abs(a[s][k]), 1e-12)
            for s in a for k in ("loss", "lm", "lb", "z", "sp", "cp", "grad_norm"))
def valid(p):
    return {r["step"]: r for r in map(json.loads, open(p)) if r["type"] == "valid"}
va, vb = valid(sys.argv[1]), valid(sys.argv[2])
assert sorted(va) == sorted(vb) and va, (sorted(va), sorted(vb))
assert all(va[s]["val_tokens"] == vb[s]["val_tokens"] for s in va)
worst = max([worst] + [abs(va[s]["val_loss"] - vb[s]["val_loss"]) / va[s]["val_loss"] for s in va])
print(f"2 ranks straight vs 2 ranks -> {sys.argv[3]} rank(s): max relative difference {worst:.3g} "
      f"(train losses, grad norms, {len(va)} validations)")
assert worst < 1e-5, worst
PY
done

# 3. Mismatched configs (MPMD launch: rank 1 gets another learning rate).
set +e
timeout -k 10 240 "$MPIRUN" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader \
  --mca btl_vader_single_copy_mechanism none \
  -np 1 "$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/mismatch" : \
  -np 1 "$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/mismatch" --set train.lr=2e-2 \
  > "$WORK/mismatch.log" 2>&1
code=$?
set -e
[ "$code" != 0 ] && [ "$code" != 124 ] || { cat "$WORK/mismatch.log"; fail "mismatched ranks exited $code"; }
grep -q "disagree before step 1: rank 1 resolved a different config" "$WORK/mismatch.log" \
  || { cat "$WORK/mismatch.log"; fail "no clear mismatch error"; }
[ ! -d "$WORK/mismatch/checkpoints" ] || fail "the refused run wrote checkpoints"
! grep -q '"type":"train"' "$WORK/mismatch/metrics.jsonl" 2>/dev/null || fail "the refused run trained"

# 4. Kill rank 1 with SIGKILL once step 3 is logged.
start=$(date +%s)
mpirun_np 2 --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/kill" --set train.max_steps=100000 \
  --set run.save_every=2 > "$WORK/kill.log" 2>&1 &
launcher=$!
victim=""
for _ in $(seq 1 600); do
  if [ -f "$WORK/kill/metrics.jsonl" ] && [ "$(grep -c '"type":"train"' "$WORK/kill/metrics.jsonl")" -ge 3 ]; then
    for pid in $(pgrep -f -- "run.out_dir=$WORK/kill" || true); do
      if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
        victim=$pid
      fi
    done
    [ -n "$victim" ] && break
  fi
  sleep 0.2
done
[ -n "$victim" ] || { kill "$launcher" 2>/dev/null; cat "$WORK/kill.log"; fail "rank 1 never reached step 3"; }
kill -9 "$victim"
set +e
wait "$launcher"
code=$?
set -e
elapsed=$(( $(date +%s) - start ))
[ "$code" != 0 ] || fail "the job exited 0 after a rank was killed"
# (mpirun passes the killed rank's status on: 137 = 128 + SIGKILL. `timeout` would need 240 s.)
[ "$elapsed" -lt 200 ] || { cat "$WORK/kill.log"; fail "the surviving rank hung until the timeout"; }
for d in "$WORK"/kill/checkpoints/step_*; do
  case "$d" in *.tmp-*) continue ;; esac
  [ -f "$d/manifest.json" ] || fail "incomplete checkpoint $d"
done
latest=$(ls -d "$WORK"/kill/checkpoints/step_???????? | tail -1)
step=$((10#${latest##*step_}))
timeout -k 10 240 "$MOETRAIN" --resume "$WORK/kill" --set train.max_steps=$((step + 1)) \
  > "$WORK/kill_resume.log" 2>&1 || { cat "$WORK/kill_resume.log"; fail "resume after the kill failed"; }
# 5. Stop (not kill) rank 1 once step 3 is logged: the others must not wait forever.
start=$(date +%s)
mpirun_np 2 --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/hang" --set train.max_steps=100000 \
  --set run.save_every=0 --set run.step_timeout_s=10 > "$WORK/hang.log" 2>&1 &
launcher=$!
victim=""
for _ in $(seq 1 600); do
  if [ -f "$WORK/hang/metrics.jsonl" ] && [ "$(grep -c '"type":"train"' "$WORK/hang/metrics.jsonl")" -ge 3 ]; then
    for pid in $(pgrep -f -- "run.out_dir=$WORK/hang" || true); do
      if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
        victim=$pid
      fi
    done
    [ -n "$victim" ] && break
  fi
  sleep 0.2
done
[ -n "$victim" ] || { kill "$launcher" 2>/dev/null; cat "$WORK/hang.log"; fail "rank 1 never reached step 3"; }
kill -STOP "$victim"
set +e
wait "$launcher"
hang_code=$?
set -e
kill -9 "$victim" 2>/dev/null || true
hang_elapsed=$(( $(date +%s) - start ))
[ "$hang_code" != 0 ] || fail "the job exited 0 with a hung rank"
[ "$hang_elapsed" -lt 200 ] || { cat "$WORK/hang.log"; fail "the job waited for the hung rank until the timeout"; }
grep -q "no progress for" "$WORK/hang.log" || { cat "$WORK/hang.log"; fail "no watchdog message"; }

echo "PASS: hung rank ended by the watchdog in ${hang_elapsed}s (exit $hang_code)"
echo "PASS: 2-rank training, resume 2 -> 1 rank and 2 -> 4 ZeRO-1 ranks, mismatched configs refused, killed rank ended the job in ${elapsed}s (exit $code), checkpoint $step resumable"
