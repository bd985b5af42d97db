#!/usr/bin/env bash
# moeinfer end to end on a tiny model trained for 10 steps (fortunes): streamed generation,
# JSONL batch generation (same output for any --batch-size, reproducible in the seed), routing
# traces (read by moeeval --routing-trace), placement at P = 2 and 4, --bench in md / csv / json,
# the expert cache (C = all: 100% hits and the same text; C = 2 with pathway prefetch: the same
# text), and every bad input of the issue as exit 2: an empty prompt, a prompt longer than
# max_seq_len, C < top_k, P not dividing E, a trace from another model.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" infer
INFER="$BUILD/apps/moeinfer"; EVAL="$BUILD/apps/moeeval"
[ -x "$INFER" ] || fail "moeinfer not built at $INFER"
write_tiny_config "$WORK/tiny.yaml" "$WORK/run" "$WORK/cache"
"$MOETRAIN" --config "$WORK/tiny.yaml" --set model.n_experts=8 > "$WORK/train.out" 2>&1 ||
  { cat "$WORK/train.out"; fail "training failed"; }
"$MOETRAIN" --config "$WORK/tiny.yaml" --set model.n_experts=8 --set train.seed=2 \
  --set run.out_dir="$WORK/other" > "$WORK/train2.out" 2>&1 || { cat "$WORK/train2.out"; fail "training 2 failed"; }
CK="$WORK/run"
expect_exit() {  # expect_exit CODE WHAT CMD...
  local code="$1" what="$2"; shift 2
  set +e; "$@" > "$WORK/err.out" 2>&1; local rc=$?; set -e
  [ "$rc" = "$code" ] || { cat "$WORK/err.out"; fail "$what: exit $rc, expected $code"; }
}

# Generation: streamed, and JSONL for a prompt file, independent of --batch-size.
"$INFER" --checkpoint "$CK" --prompt "The computer" --max-new-tokens 8 --threads 1 > "$WORK/one.txt"
grep -q "^The computer" "$WORK/one.txt" || fail "streamed output does not start with the prompt"
printf 'Hello there\nA\nThe law of the land is\n' > "$WORK/prompts.txt"
for bs in 1 3; do
  "$INFER" --checkpoint "$CK" --prompt-file "$WORK/prompts.txt" --max-new-tokens 6 \
    --temperature 0.9 --top-k 20 --seed 5 --batch-size $bs --threads 1 > "$WORK/gen$bs.jsonl"
done
cmp "$WORK/gen1.jsonl" "$WORK/gen3.jsonl" || fail "sampled output depends on --batch-size"
python3 - "$WORK/gen3.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["prompt"] for r in rows] == ["Hello there", "A", "The law of the land is"], rows
for r in rows:
    assert r["completion_tokens"] <= 6 and r["finish_reason"] in ("stop", "length"), r
PY

# Traces, moeeval on a trace, placement.
F=/usr/share/games/fortunes
"$INFER" --checkpoint "$CK" --trace "$WORK/calib.moetrace" --text "$F/computers" --max-tokens 4000 --threads 1
"$INFER" --checkpoint "$CK" --trace "$WORK/held.moetrace" --text "$F/wisdom" --max-tokens 3000 --threads 1
"$EVAL" --checkpoint "$CK" --routing-trace "$WORK/held.moetrace" --threads 1 > "$WORK/eval.txt" ||
  fail "moeeval --routing-trace"
grep -q "0 -> 1" "$WORK/eval.txt" || { cat "$WORK/eval.txt"; fail "no pathway table from the trace"; }
"$INFER" --checkpoint "$CK" --placement round-robin,contiguous,path-aware --devices 2,4 \
  --calibration "$WORK/calib.moetrace" --heldout "$WORK/held.moetrace" -o json > "$WORK/place.json"
python3 - "$WORK/place.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
assert len(rows) == 6, rows
for p in (2, 4):
    r = {x["placement"]: x for x in rows if x["devices"] == p}
    assert r["path-aware"]["calibration_cross_fraction"] <= r["round-robin"]["calibration_cross_fraction"]
    for x in r.values():
        assert 0 <= x["heldout_cross_fraction"] <= 1 and x["heldout_a2a_bytes_per_token"] >= 0
        per_layer = {}
        for i, d in enumerate(x["device_of_expert"]):
            per_layer.setdefault((i // 8, d), 0)
            per_layer[(i // 8, d)] += 1
        assert set(per_layer.values()) == {8 // p}, x  # balanced
PY

# Latency runs in three formats.
"$INFER" --checkpoint "$CK" --bench -p 4,8 -n 8 -b 1,2 -r 2 --threads 1 > "$WORK/bench.md" 2> "$WORK/progress.txt"
grep -q "| p | n | b | prefill t/s" "$WORK/bench.md" || { cat "$WORK/bench.md"; fail "markdown table"; }
grep -q "rep 2/2" "$WORK/progress.txt" || fail "no progress on stderr"
"$INFER" --checkpoint "$CK" --bench -p 8 -n 8 -b 1 -r 2 -o csv --threads 1 2>/dev/null | head -1 | grep -q "^p,n,b,reps,prefill_tok_s" || fail "csv header"
"$INFER" --checkpoint "$CK" --bench -p 8 -n 8 -b 1 -r 2 -o json --threads 1 2>/dev/null > "$WORK/bench.json"
python3 - "$WORK/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
for k in ("prefill_tok_s", "ttft_ms", "decode_tok_s", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms"):
    assert r[k]["mean"] > 0, (k, r)
assert r["decode_bytes_per_token"] > 0 and r["roofline_fraction"] > 0, r
assert len(r["distinct_experts_per_layer"]) == 2 and all(x == 2 for x in r["distinct_experts_per_layer"]), r
assert abs(sum(r["decode_time_share"].values()) - 1) < 1e-6, r
PY

# Expert cache: C = all gives 100% hits and the resident model's text; C = 2 with prefetch too.
"$INFER" --checkpoint "$CK" --prompt "The computer" --max-new-tokens 12 --threads 1 > "$WORK/ref.txt"
"$INFER" --checkpoint "$CK" --prompt "The computer" --max-new-tokens 12 --threads 1 \
  --expert-cache 8 > "$WORK/c8.txt" 2> "$WORK/c8.err"
grep -q "hit rate 100.0%" "$WORK/c8.err" || { cat "$WORK/c8.err"; fail "C = all is not 100% hits"; }
"$INFER" --checkpoint "$CK" --prompt "The computer" --max-new-tokens 12 --threads 1 \
  --expert-cache 2 --prefetch pathway --calibration "$WORK/calib.moetrace" > "$WORK/c2.txt" 2>/dev/null
cmp "$WORK/ref.txt" "$WORK/c8.txt" || fail "C = all changed the text"
cmp "$WORK/ref.txt" "$WORK/c2.txt" || fail "C = 2 with prefetch changed the text"

# Bad input: exit 2 each.
expect_exit 2 "empty prompt" "$INFER" --checkpoint "$CK" --prompt ""
python3 -c "print('word ' * 200)" > "$WORK/long.txt"
expect_exit 2 "prompt longer than max_seq_len" "$INFER" --checkpoint "$CK" --prompt-file "$WORK/long.txt"
grep -q "max_seq_len" "$WORK/err.out" || fail "the long-prompt error does not say why"
expect_exit 2 "C < top_k" "$INFER" --checkpoint "$CK" --prompt hi --expert-cache 1
expect_exit 2 "P not dividing E" "$INFER" --checkpoint "$CK" --placement path-aware --devices 3 \
  --calibration "$WORK/calib.moetrace" --heldout "$WORK/held.moetrace"
expect_exit 2 "trace of another model" "$INFER" --checkpoint "$WORK/other" --placement path-aware \
  --devices 2 --calibration "$WORK/calib.moetrace" --heldout "$WORK/held.moetrace"
grep -q "another model" "$WORK/err.out" || fail "the fingerprint error does not say why"
expect_exit 2 "moeeval on another model's trace" "$EVAL" --checkpoint "$WORK/other" \
  --routing-trace "$WORK/held.moetrace"
echo "infer_end_to_end: ok"
