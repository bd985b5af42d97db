# Bad input to moetrain: each case must exit non-zero (2 for a usage error), print an error that
# names the problem, and leave every existing file of the run / cache directories unchanged.
# Cases: malformed YAML, unknown key, wrong type, unknown flag, missing corpus file, empty
# corpus, shards made with another tokenizer (vocabulary mismatch), truncated checkpoint,
# --resume of a directory without checkpoints.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" badinput

# expect_failure CODE PATTERN DIR -- moetrain args...: runs moetrain, checks the exit code, that
# the output matches PATTERN (grep -E), and that DIR's files are unchanged.
expect_failure() {
  local want=$1 pattern=$2 dir=$3
  shift 4
  local before after code
  before=$(tree_checksums "$dir")
  set +e
  "$MOETRAIN" "$@" > "$WORK/out.log" 2>&1
  code=$?
  set -e
  if [ "$code" != "$want" ]; then
    cat "$WORK/out.log"
    fail "moetrain $* exited $code, expected $want"
  fi
  grep -Eq -e "$pattern" "$WORK/out.log" || { cat "$WORK/out.log"; fail "moetrain $*: no message matching '$pattern'"; }
  after=$(tree_checksums "$dir")
  [ "$before" = "$after" ] || fail "moetrain $* changed files in $dir"
  echo "ok ($code): $(grep -m1 -E -e "$pattern" "$WORK/out.log" | sed 's/^.*\] //' | cut -c1-150)"
}

# An existing, healthy run (4 steps, one checkpoint) that no failure may touch.
write_tiny_config "$WORK/tiny.yaml" "$WORK/run" "$WORK/cache"
"$MOETRAIN" --config "$WORK/tiny.yaml" --set train.max_steps=4 > "$WORK/run.log" 2>&1 \
  || { cat "$WORK/run.log"; fail "the reference run failed"; }
mkdir -p "$WORK/fresh"
echo "a file that must survive" > "$WORK/fresh/keep.txt"

printf 'model:\n  d_model: 32\n   n_layers: [2\n' > "$WORK/malformed.yaml"
expect_failure 2 "malformed.yaml:[0-9]+:[0-9]+: malformed YAML" "$WORK/run" -- --config "$WORK/malformed.yaml"

printf 'model:\n  d_model: 32\n  n_expert: 4\n' > "$WORK/unknown.yaml"
expect_failure 2 "unknown.yaml:3: unknown key 'model.n_expert' \(did you mean 'model.n_experts'\?\)" \
  "$WORK/run" -- --config "$WORK/unknown.yaml"

expect_failure 2 "train.lr: expected a number, found 'abc'" "$WORK/run" -- \
  --config "$WORK/tiny.yaml" --set train.lr=abc

expect_failure 2 "not expected.*--confg" "$WORK/run" -- --confg "$WORK/tiny.yaml"

expect_failure 2 "no_such_corpus.txt" "$WORK/fresh" -- --config "$WORK/tiny.yaml" \
  --set run.out_dir="$WORK/fresh" --set data.train="[$WORK/no_such_corpus.txt]"

: > "$WORK/empty.txt"
expect_failure 2 "empty|no text|no training|holds no" "$WORK/fresh" -- --config "$WORK/tiny.yaml" \
  --set run.out_dir="$WORK/fresh" --set data.train="[$WORK/empty.txt]" \
  --set data.cache_dir="$WORK/fresh/cache"

# A second tokenizer with another vocabulary, then the first run's shards with it.
"$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/other" \
  --set data.cache_dir="$WORK/other_cache" --set data.tokenizer_vocab_size=600 \
  --set train.max_steps=1 > "$WORK/other.log" 2>&1 || { cat "$WORK/other.log"; fail "second tokenizer run failed"; }
expect_failure 2 "shards made with another tokenizer.*vocab 600.*vocab 512" "$WORK/cache" -- --config "$WORK/tiny.yaml" \
  --set run.out_dir="$WORK/fresh" --set data.tokenizer="$WORK/other/tokenizer.model"

cp -a "$WORK/run" "$WORK/truncated"
ckpt="$WORK/truncated/checkpoints/step_00000004"
size=$(stat -c %s "$ckpt/model.safetensors")
truncate -s $((size - 100)) "$ckpt/model.safetensors"
expect_failure 2 "model.safetensors has $((size - 100)) bytes.*truncated" "$WORK/truncated" -- \
  --resume "$WORK/truncated"

expect_failure 2 "expected a run directory with checkpoints" "$WORK/fresh" -- --resume "$WORK/fresh"

# The healthy run still resumes after all that.
"$MOETRAIN" --resume "$WORK/run" --set train.max_steps=5 > "$WORK/resume.log" 2>&1 \
  || { cat "$WORK/resume.log"; fail "the untouched run no longer resumes"; }
echo "PASS: every bad input was refused with a clear error and changed nothing"
