# End to end: moetrain trains a small MoE (DeepSeek-style: shared expert, dense first layer,
# bias balancing, all four losses) on real English text (fortunes) and the loss falls: the last
# logged training loss is well below the first, and the last validation loss below the first.
# Checks the run directory too: config.yaml (loadable again), train.log, metrics.jsonl with
# per-layer routing statistics, and a complete checkpoint.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" e2e

write_tiny_config "$WORK/tiny.yaml" "$WORK/run" "$WORK/cache"
"$MOETRAIN" --config "$WORK/tiny.yaml" --losses lb,z,sp,cp \
  --set model.arch=deepseek --set model.n_shared_experts=1 --set model.n_layers=3 \
  --set model.dense_layers=1 --set loss.balance=bias --set model.d_model=64 \
  --set model.n_heads=4 --set model.n_kv_heads=2 --set model.n_experts=8 \
  --set model.max_seq_len=64 --set train.seq_len=64 --set train.batch_size=8 \
  --set train.max_steps=80 --set train.warmup_steps=8 --set train.lr=1e-2 \
  --set run.log_every=5 --set run.eval_every=20 --set run.eval_batches=8 --set run.save_every=40 \
  > "$WORK/train.out" 2>&1 || { cat "$WORK/train.out"; fail "training failed"; }
tail -n 4 "$WORK/train.out"

run="$WORK/run"
for f in config.yaml train.log metrics.jsonl tokenizer.model; do
  [ -s "$run/$f" ] || fail "$run/$f missing or empty"
done
for f in model.safetensors optimizer.safetensors config.yaml tokenizer.model trainer_state.json manifest.json; do
  [ -s "$run/checkpoints/step_00000080/$f" ] || fail "checkpoint file $f missing"
done
[ -d "$run/checkpoints/step_00000040" ] || fail "no checkpoint at step 40 (save_every)"
grep -q "valid loss" "$run/train.log" || fail "train.log has no validation line"
"$MOETRAIN" --config "$run/config.yaml" --dump-config > "$WORK/again.yaml" || fail "run config.yaml does not load"
cmp "$run/config.yaml" "$WORK/again.yaml" || fail "config.yaml does not round-trip"

python3 - "$run/metrics.jsonl" <<'PY'
import json, math, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in recs if r["type"] == "train"]
valid = [r for r in recs if r["type"] == "valid"]
assert len(train) == 16 and len(valid) == 4, (len(train), len(valid))
for r in train:
    for k in ("step", "loss", "lm", "lb", "z", "sp", "cp", "lr", "grad_norm", "tok_per_s", "mfu"):
        assert k in r and math.isfinite(r[k]), (k, r)
    assert len(r["routing"]) == 2, r["routing"]      # layers 1 and 2 are MoE, layer 0 dense
    for layer in r["routing"]:
        assert 0 < layer["entropy"] <= math.log(8) + 1e-9, layer
        assert 0 < layer["topk_mass"] <= 1 + 1e-9, layer
        assert abs(layer["load_mean"] - 1 / 8) < 1e-9 and layer["load_max"] >= layer["load_mean"], layer
first, last = train[0]["lm"], train[-1]["lm"]
print(f"training lm loss {first:.3f} -> {last:.3f}; validation loss "
      f"{valid[0]['val_loss']:.3f} -> {valid[-1]['val_loss']:.3f} (bpb {valid[-1]['val_bpb']:.3f})")
assert last < first - 1.0, "the training loss did not fall by at least 1 nat"
assert valid[-1]["val_loss"] < valid[0]["val_loss"] - 0.2, "the validation loss did not fall"
assert 0 < valid[-1]["val_bpb"] < 8
PY
echo "PASS: end-to-end training with a falling loss"
