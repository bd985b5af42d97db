# Damaged and forged inputs (docs/reliability.md, "Exit codes"): each is refused with exit code 2,
# a short message, and nothing of the run changed.
#  - a forged trainer_state.json with step < 0: moetrain --resume exits 2; metrics.jsonl and
#    config.yaml unchanged;
#  - a failing resume (here a diverging --set train.lr) leaves the run's config.yaml unchanged;
#  - moeeval on damaged safetensors content (no manifest to catch it first), on NaN weights, on a
#    swapped tokenizer with a smaller vocabulary, on a task with an empty choice, on --tasks all
#    with no task files: exit 2;
#  - a malformed 10 MB JSONL line (a corpus and a task file) gives a short error.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" inputs
MOEEVAL="$BUILD/apps/moeeval"

expect_code() {  # $1: expected code, $2: log, $3: what; runs the rest
  local want=$1 log=$2 what=$3
  shift 3
  set +e
  "$@" > "$log" 2>&1
  local code=$?
  set -e
  [ "$code" = "$want" ] || { cat "$log"; fail "$what: exit code $code, expected $want"; }
  [ "$(wc -c < "$log")" -lt 20000 ] || fail "$what: an error of $(wc -c < "$log") bytes"
}

write_tiny_config "$WORK/tiny.yaml" "$WORK/run" "$WORK/cache"
"$MOETRAIN" --config "$WORK/tiny.yaml" --set train.max_steps=20 --stop-at-step 6 > "$WORK/train.log" 2>&1 \
  || { cat "$WORK/train.log"; fail "training failed"; }
ck="$WORK/run/checkpoints/step_00000006"
printf 'The cat sat on the mat. A dog ran in the park.\n' > "$WORK/text.txt"
"$MOEEVAL" --checkpoint "$ck" --ppl "$WORK/text.txt" > "$WORK/ok.log" 2>&1 \
  || { cat "$WORK/ok.log"; fail "moeeval on the intact checkpoint failed"; }

# A forged trainer state: step < 0, with the manifest rewritten to match (so that only the
# state's own validation can catch it).
cp -r "$WORK/run" "$WORK/forged"
python3 - "$WORK/forged/checkpoints/step_00000006" <<'PY'
import json, os, struct, sys
M = (1 << 64) - 1
def rotl(x, r): return ((x << r) | (x >> (64 - r))) & M
def fmix(k):
    k ^= k >> 33; k = (k * 0xff51afd7ed558ccd) & M
    k ^= k >> 33; k = (k * 0xc4ceb9fe1a85ec53) & M
    return k ^ (k >> 33)
def hash_bytes(b):  # checkpoint_files.cpp
    h, n = 0x9e3779b97f4a7c15, len(b)
    for i in range(n // 8):
        k = struct.unpack_from("<Q", b, 8 * i)[0]
        k = (k * 0x87c37b91114253d5) & M; k = rotl(k, 31); k = (k * 0x4cf5ad432745937f) & M
        h ^= k; h = (rotl(h, 27) * 5 + 0x52dce729) & M
    tail = b[(n // 8) * 8:]
    k = int.from_bytes(tail + b"\0" * (8 - len(tail)), "little")
    h ^= fmix(k ^ ((len(tail) * 0x100000001b3) & M))
    return fmix(h ^ n)
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
# The hash port must agree with the C++ one on the untouched file first.
state = open(os.path.join(d, "trainer_state.json"), "rb").read()
assert m["files"]["trainer_state.json"]["hash"] == "%016x" % hash_bytes(state), "hash port differs"
s = json.loads(state)
s["step"] = -5
state = json.dumps(s).encode()
open(os.path.join(d, "trainer_state.json"), "wb").write(state)
m["files"]["trainer_state.json"] = {"bytes": len(state), "hash": "%016x" % hash_bytes(state)}
open(os.path.join(d, "manifest.json"), "w").write(json.dumps(m))
PY
before=$(tree_checksums "$WORK/forged")
expect_code 2 "$WORK/forged.log" "forged trainer_state step < 0" "$MOETRAIN" --resume "$WORK/forged"
grep -q "step must be >= 0, found -5" "$WORK/forged.log" || { cat "$WORK/forged.log"; fail "unclear error for step < 0"; }
[ "$before" = "$(tree_checksums "$WORK/forged")" ] || fail "a refused resume changed the run (metrics.jsonl?)"

# A resume that fails (diverges) leaves config.yaml as it was.
cfg_before=$(sha256sum < "$WORK/run/config.yaml")
set +e
"$MOETRAIN" --resume "$WORK/run" --set train.lr=1e30 --set train.grad_clip=0 > "$WORK/diverge.log" 2>&1
code=$?
set -e
[ "$code" != 0 ] || { cat "$WORK/diverge.log"; fail "a diverging resume exited 0"; }
[ "$cfg_before" = "$(sha256sum < "$WORK/run/config.yaml")" ] || fail "a failed resume rewrote config.yaml"

# moeeval: damaged content without a manifest to catch it.
cp -r "$ck" "$WORK/damaged"
rm "$WORK/damaged/manifest.json"
printf '\x20\x00\x00\x00\x00\x00\x00\x00{"broken": ' | dd of="$WORK/damaged/model.safetensors" conv=notrunc 2>/dev/null
expect_code 2 "$WORK/damaged.log" "damaged model.safetensors" "$MOEEVAL" --checkpoint "$WORK/damaged" --ppl "$WORK/text.txt"
grep -q "damaged" "$WORK/damaged.log" || { cat "$WORK/damaged.log"; fail "unclear error for damaged weights"; }

# NaN weights.
cp -r "$ck" "$WORK/nan"
rm "$WORK/nan/manifest.json"
python3 - "$WORK/nan/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
name = sorted(k for k in h if k != "__metadata__" and h[k]["dtype"] == "F32")[0]
off = 8 + n + h[name]["data_offsets"][0]
b[off:off + 4] = struct.pack("<f", float("nan"))
open(p, "wb").write(bytes(b))
PY
expect_code 2 "$WORK/nan.log" "NaN weights" "$MOEEVAL" --checkpoint "$WORK/nan" --ppl "$WORK/text.txt"
grep -q "non-finite" "$WORK/nan.log" || { cat "$WORK/nan.log"; fail "unclear error for NaN weights"; }

# A swapped tokenizer with a smaller vocabulary (400 instead of 512).
"$MOETRAIN" --config "$WORK/tiny.yaml" --set data.tokenizer_vocab_size=400 \
  --set data.cache_dir="$WORK/cache400" --set run.out_dir="$WORK/run400" --set train.max_steps=1 \
  > "$WORK/train400.log" 2>&1 || { cat "$WORK/train400.log"; fail "training the 400-token tokenizer failed"; }
cp -r "$ck" "$WORK/swapped"
rm "$WORK/swapped/manifest.json"
cp "$WORK/run400/checkpoints/step_00000001/tokenizer.model" "$WORK/swapped/tokenizer.model"
expect_code 2 "$WORK/swapped.log" "swapped tokenizer" "$MOEEVAL" --checkpoint "$WORK/swapped" --ppl "$WORK/text.txt"
grep -q "it is not the run's tokenizer" "$WORK/swapped.log" \
  || { cat "$WORK/swapped.log"; fail "unclear error for a swapped tokenizer"; }
# A swapped tokenizer of the same size (trained on other text): caught by the tokenizer hash
# recorded in model.safetensors.
"$MOETRAIN" --config "$WORK/tiny.yaml" --set "data.train=[$FORTUNES/people]" \
  --set data.cache_dir="$WORK/cache_other" --set run.out_dir="$WORK/run_other" --set train.max_steps=1 \
  > "$WORK/train_other.log" 2>&1 || { cat "$WORK/train_other.log"; fail "training the other tokenizer failed"; }
cp -r "$ck" "$WORK/swapped_same"
rm "$WORK/swapped_same/manifest.json"
cp "$WORK/run_other/checkpoints/step_00000001/tokenizer.model" "$WORK/swapped_same/tokenizer.model"
expect_code 2 "$WORK/swapped_same.log" "same-size swapped tokenizer" "$MOEEVAL" --checkpoint "$WORK/swapped_same" --ppl "$WORK/text.txt"
grep -q "not the tokenizer the model was trained with" "$WORK/swapped_same.log" \
  || { cat "$WORK/swapped_same.log"; fail "unclear error for a same-size swapped tokenizer"; }
# Empty choice strings.
mkdir -p "$WORK/tasks"
printf '{"context": "The sky is", "choices": ["blue", ""], "gold": 0}\n' > "$WORK/tasks/empty.jsonl"
expect_code 2 "$WORK/empty.log" "empty choice" "$MOEEVAL" --checkpoint "$ck" --tasks empty --task-dir "$WORK/tasks"
grep -q "choice 2 is empty" "$WORK/empty.log" || { cat "$WORK/empty.log"; fail "unclear error for an empty choice"; }

# --tasks all with no task files.
mkdir -p "$WORK/notasks"
expect_code 2 "$WORK/all.log" "--tasks all without task files" "$MOEEVAL" --checkpoint "$ck" --tasks all --task-dir "$WORK/notasks"
grep -q "no task files found" "$WORK/all.log" || { cat "$WORK/all.log"; fail "unclear error for --tasks all"; }

# A malformed 10 MB JSONL line: in a task file and in a corpus.
python3 - "$WORK/tasks/huge.jsonl" "$WORK/huge_corpus.jsonl" <<'PY'
import sys
line = '{"context": "' + "x" * (10 << 20) + '", "choices": ["a", "b"], "gold": 0' + "\n"  # no }
open(sys.argv[1], "w").write(line)
open(sys.argv[2], "w").write('{"text": "' + "y" * (10 << 20) + '\n')
PY
expect_code 2 "$WORK/huge.log" "10 MB task line" "$MOEEVAL" --checkpoint "$ck" --tasks huge --task-dir "$WORK/tasks"
expect_code 2 "$WORK/huge2.log" "10 MB corpus line" "$MOEEVAL" --checkpoint "$ck" --ppl "$WORK/huge_corpus.jsonl"
echo "task error: $(wc -c < "$WORK/huge.log") bytes, corpus error: $(wc -c < "$WORK/huge2.log") bytes"
echo "PASS: forged, damaged and malformed inputs exit 2 with short errors and change nothing"
