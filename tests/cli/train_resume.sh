# Resume is bit-identical: 10 steps straight through == 5 steps (--stop-at-step), then
# --resume for the remaining 5. The final model.safetensors and optimizer.safetensors must be
# byte-identical and every logged value (losses, lr, grad norm, routing, validation) equal.
# Also: a fresh run into a directory that holds a run is refused (exit 2) and changes nothing.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" resume

write_tiny_config "$WORK/tiny.yaml" "$WORK/unused" "$WORK/cache"
"$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/straight" \
  > "$WORK/straight.log" 2>&1 || { cat "$WORK/straight.log"; fail "straight run failed"; }
"$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/split" --stop-at-step 5 \
  > "$WORK/first.log" 2>&1 || { cat "$WORK/first.log"; fail "first half failed"; }
grep -q "continue with --resume" "$WORK/first.log" || fail "the stopped run did not say how to resume"
[ -d "$WORK/split/checkpoints/step_00000005" ] || fail "no checkpoint at step 5"

# Starting the same run again without --resume must be refused and leave the run untouched.
before=$(tree_checksums "$WORK/split")
set +e
"$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/split" > "$WORK/refused.log" 2>&1
code=$?
set -e
[ "$code" = 2 ] || { cat "$WORK/refused.log"; fail "a fresh run over an existing run exited $code, expected 2"; }
grep -q "already holds a run" "$WORK/refused.log" || fail "unclear refusal: $(cat "$WORK/refused.log")"
[ "$before" = "$(tree_checksums "$WORK/split")" ] || fail "the refused run changed files"

# Resume with no --config: the checkpoint's config is used.
"$MOETRAIN" --resume "$WORK/split" > "$WORK/second.log" 2>&1 || { cat "$WORK/second.log"; fail "resume failed"; }
grep -q "resumed from .*step_00000005 at step 5" "$WORK/second.log" || fail "resume did not start at step 5"

for f in model.safetensors optimizer.safetensors; do
  cmp "$WORK/straight/checkpoints/step_00000010/$f" "$WORK/split/checkpoints/step_00000010/$f" \
    || fail "$f differs between the straight and the resumed run"
done
metrics_without_timing "$WORK/straight/metrics.jsonl" > "$WORK/a.jsonl"
metrics_without_timing "$WORK/split/metrics.jsonl" > "$WORK/b.jsonl"
[ "$(wc -l < "$WORK/a.jsonl")" -ge 13 ] || fail "expected 10 train and 3 validation records"
diff "$WORK/a.jsonl" "$WORK/b.jsonl" || fail "metrics differ between the straight and the resumed run"
echo "PASS: resume is bit-identical (weights, optimizer state, $(wc -l < "$WORK/a.jsonl") metric records)"
