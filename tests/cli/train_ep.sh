# moetrain with expert parallelism under mpirun (CPU ranks; skipped, exit 77, without MPI).
#  1. --dry-run with train.expert_parallel prints the all-to-all bytes per step (and refuses a
#     degree that does not divide the ranks and the experts).
#  2. 2 ranks with train.expert_parallel 2 train 6 steps and log the same losses as plain data
#     parallelism on 2 ranks (1e-5 relative: the gradient norm adds the shards' squares apart).
#  3. The same run stopped at step 3 continues on 1 rank (--set train.expert_parallel=1, without
#     it a clear usage error) with the same losses, and moeeval scores its checkpoint (the full
#     model) in one process.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" ep
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

# 1. Dry run.
out=$("$MOETRAIN" --config "$WORK/tiny.yaml" --dry-run --ranks 4 --set train.expert_parallel=2 \
  --link-gbs 50 --log-level error)
grep -q "all-to-all per step and rank (expert parallel 2)" <<<"$out" || fail "no all-to-all line: $out"
grep -q "s per step for the all-to-alls" <<<"$out" || fail "no all-to-all time: $out"
grep -q "memory per rank with expert parallel 2" <<<"$out" || fail "no EP memory line: $out"
out=$("$MOETRAIN" --config "$WORK/tiny.yaml" --dry-run --ranks 4 --set train.expert_parallel=3 \
  --log-level error)
grep -q "expert parallel 3: not possible" <<<"$out" || fail "EP 3 on 4 ranks not refused: $out"
"$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/warm" --set train.max_steps=1 \
  > "$WORK/warm.log" 2>&1 || { cat "$WORK/warm.log"; fail "warm-up run failed"; }

# 2. EP 2 vs DP on 2 ranks; and the EP run stopped at step 3.
common=(--config "$WORK/tiny.yaml" --set train.max_steps=6 --set train.grad_accum=2)
mpirun_np 2 "${common[@]}" --set run.out_dir="$WORK/dp" > "$WORK/dp.log" 2>&1 \
  || { cat "$WORK/dp.log"; fail "2-rank DP run failed"; }
mpirun_np 2 "${common[@]}" --set run.out_dir="$WORK/ep" --set train.expert_parallel=2 \
  > "$WORK/ep.log" 2>&1 || { cat "$WORK/ep.log"; fail "2-rank EP run failed"; }
grep -q "expert parallel: 1 groups of 2 ranks, 2 routed experts per rank" "$WORK/ep.log" \
  || fail "no expert-parallel line: $(cat "$WORK/ep.log")"
mpirun_np 2 "${common[@]}" --set run.out_dir="$WORK/split" --set train.expert_parallel=2 \
  --stop-at-step 3 > "$WORK/split.log" 2>&1 || { cat "$WORK/split.log"; fail "first half failed"; }

# 3. Resume on 1 rank: the saved degree does not fit, then with expert_parallel 1.
set +e
timeout -k 10 240 "$MOETRAIN" --resume "$WORK/split" --set train.grad_accum=4 > "$WORK/bad.log" 2>&1
code=$?
set -e
[ "$code" = 2 ] || { cat "$WORK/bad.log"; fail "resuming EP 2 on 1 rank exited $code, expected 2"; }
grep -q "train.expert_parallel: expected a divisor of the number of ranks (1), found 2" "$WORK/bad.log" \
  || { cat "$WORK/bad.log"; fail "no clear error for the EP degree"; }
timeout -k 10 240 "$MOETRAIN" --resume "$WORK/split" --set train.grad_accum=4 \
  --set train.expert_parallel=1 > "$WORK/resume.log" 2>&1 || { cat "$WORK/resume.log"; fail "1-rank resume failed"; }
for run in ep split; do
python3 - "$WORK/dp/metrics.jsonl" "$WORK/$run/metrics.jsonl" $run <<'PY' || fail "$run losses differ from DP"
import json, sys
def recs(p, t):
    return {r["step"]: r for r in map(json.loads, open(p)) if r["type"] == t}
a, b = recs(sys.argv[1], "train"), recs(sys.argv[2], "train")
assert sorted(a) == sorted(b) == list(range(1, 7)), (sorted(a), sorted(b))
worst = max(abs(a[s][k] - b[s][k]) / max(abs(a[s][k]), 1e-12)
            for s in a for k in ("loss", "lm", "lb", "z", "sp", "cp", "grad_norm"))
va, vb = recs(sys.argv[1], "valid"), recs(sys.argv[2], "valid")
assert sorted(va) == sorted(vb) and va, (sorted(va), sorted(vb))
assert all(va[s]["val_tokens"] == vb[s]["val_tokens"] for s in va)
worst = max([worst] + [abs(va[s]["val_loss"] - vb[s]["val_loss"]) / va[s]["val_loss"] for s in va])
print(f"DP 2 ranks vs {sys.argv[3]} (EP 2{' -> 1 rank' if sys.argv[3] == 'split' else ''}): "
      f"max relative difference {worst:.3g} (train losses, grad norms, {len(va)} validations)")
assert worst < 1e-5, worst
PY
done
"$BUILD/apps/moeeval" --checkpoint "$WORK/ep" --ppl "$FORTUNES/wisdom" --threads 1 \
  --log-level error > "$WORK/eval.log" 2>&1 || { cat "$WORK/eval.log"; fail "moeeval on the EP checkpoint failed"; }
grep -qi "perplexity\|ppl" "$WORK/eval.log" || { cat "$WORK/eval.log"; fail "no perplexity from moeeval"; }
echo "PASS: dry-run all-to-all bytes, EP 2 = DP on 2 ranks, EP 2 -> 1 rank resume, moeeval on the EP checkpoint"
