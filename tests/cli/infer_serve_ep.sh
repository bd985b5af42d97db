# moeinfer --serve-ep under mpirun (CPU ranks; skipped, exit 77, without MPI), on a tiny model
# (E = 8) trained for 10 steps:
#  1. 2 ranks score the first 12 questions of an MMLU subject under round-robin and path-aware
#     placement: every question is scored once (12 samples), the accuracy equals moeeval's on
#     the same questions in one process, and the bytes and hop fractions are reported;
#  2. bad input, exit 2: 3 ranks for 8 experts, path-aware without a calibration trace, another
#     mode under mpirun.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" serve_ep
MPIRUN=$(command -v mpirun || true)
[ -n "$MPIRUN" ] || { echo "SKIP: mpirun not installed (tools/setup.sh installs openmpi-bin)"; exit 77; }
grep -q "^MOE_WITH_MPI_BUILT:INTERNAL=ON" "$BUILD/CMakeCache.txt" || { echo "SKIP: built without MPI"; exit 77; }
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
INFER="$BUILD/apps/moeinfer"; EVAL="$BUILD/apps/moeeval"
[ -x "$INFER" ] || fail "moeinfer not built at $INFER"
mpirun_np() {  # mpirun_np N args...: bounded launch of N ranks of moeinfer
  local np=$1; shift
  timeout -k 10 240 "$MPIRUN" --allow-run-as-root --oversubscribe --bind-to none \
    --mca btl self,vader --mca btl_vader_single_copy_mechanism none -np "$np" "$INFER" "$@"
}
write_tiny_config "$WORK/tiny.yaml" "$WORK/run" "$WORK/cache"
"$MOETRAIN" --config "$WORK/tiny.yaml" --set model.n_experts=8 > "$WORK/train.out" 2>&1 ||
  { cat "$WORK/train.out"; fail "training failed"; }
CK="$WORK/run"
TASKS="$SRC/data/zeroshot"
SUBJECT=mmlu_high_school_geography
"$INFER" --checkpoint "$CK" --trace "$WORK/calib.moetrace" \
  --text /usr/share/games/fortunes/computers --max-tokens 3000 --threads 1

# 1. Serving on 2 ranks against moeeval in one process.
mpirun_np 2 --checkpoint "$CK" --serve-ep "$SUBJECT" --task-dir "$TASKS" --limit 12 \
  --placement round-robin,path-aware --calibration "$WORK/calib.moetrace" -r 2 -o json \
  --batch-size 4 --threads 1 > "$WORK/serve.json" 2> "$WORK/serve.err" ||
  { cat "$WORK/serve.err"; fail "moeinfer --serve-ep on 2 ranks failed"; }
"$EVAL" --checkpoint "$CK" --tasks "$SUBJECT" --task-dir "$TASKS" --limit 12 --threads 1 \
  --out "$WORK/eval.json" > "$WORK/eval.out" 2>&1 || { cat "$WORK/eval.out"; fail "moeeval failed"; }
python3 - "$WORK/serve.json" "$WORK/eval.json" "$SUBJECT" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
ev = json.load(open(sys.argv[2]))
want = ev["results"][sys.argv[3]]["acc,none"]
assert [r["placement"] for r in rows] == ["round-robin", "path-aware"], rows
for r in rows:
    assert r["devices"] == 2 and r["samples"] == 12, r
    assert abs(r["acc"] - want) < 1e-9, (r["acc"], want)
    assert len(r["samples_per_second"]) == 2 and all(x > 0 for x in r["samples_per_second"]), r
    assert 0 < r["cross_fraction"] < 1, r
    assert r["expert_bytes_per_token"] > 0 and r["context_bytes_per_token"] > 0, r
    assert 0 < r["comm_share_mean"] < 1, r
# The bytes that do not depend on the placement are the same under both.
assert rows[0]["context_bytes_per_token"] == rows[1]["context_bytes_per_token"], rows
PY

# 2. Bad input: each a clear error and exit 2.
expect_exit() {  # expect_exit CODE WHAT PATTERN CMD...
  local code="$1" what="$2" pattern="$3"; shift 3
  set +e; "$@" > "$WORK/err.out" 2>&1; local rc=$?; set -e
  [ "$rc" = "$code" ] || { cat "$WORK/err.out"; fail "$what: exit $rc, expected $code"; }
  grep -q -- "$pattern" "$WORK/err.out" || { cat "$WORK/err.out"; fail "$what: no '$pattern'"; }
}
expect_exit 2 "3 ranks for 8 experts" "divide" mpirun_np 3 --checkpoint "$CK" \
  --serve-ep "$SUBJECT" --task-dir "$TASKS" --limit 4 -r 1 --threads 1
expect_exit 2 "path-aware without calibration" "needs --calibration" mpirun_np 2 \
  --checkpoint "$CK" --serve-ep "$SUBJECT" --task-dir "$TASKS" --placement path-aware --limit 4 \
  -r 1 --threads 1
expect_exit 2 "generation under mpirun" "only --serve-ep runs on several ranks" mpirun_np 2 \
  --checkpoint "$CK" --prompt "The computer" --threads 1
echo "PASS: moeinfer --serve-ep"
