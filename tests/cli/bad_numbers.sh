# Non-finite and overflowing numbers (issue 11, items 4 and 5): each must exit 2 with an error
# naming the key (or the tensor), create no run directory, and never crash. Then moeeval on a
# checkpoint whose weights hold a NaN: exit 2 naming the tensor, not an evaluation.
source "$2/tests/cli/support/train_common.bash"
setup_cli_test "$1" "$2" badnumbers
MOEEVAL="$BUILD/apps/moeeval"

write_tiny_config "$WORK/tiny.yaml" "$WORK/run" "$WORK/cache"

# expect_usage KEY_PATTERN moetrain-args...: exit code 2, KEY_PATTERN in the output, no run dir.
expect_usage() {
  local pattern=$1 code
  shift
  set +e
  "$MOETRAIN" --config "$WORK/tiny.yaml" --set run.out_dir="$WORK/never" "$@" > "$WORK/out.log" 2>&1
  code=$?
  set -e
  [ "$code" = 2 ] || { cat "$WORK/out.log"; fail "moetrain $* exited $code, expected 2"; }
  grep -Eq -e "$pattern" "$WORK/out.log" || { cat "$WORK/out.log"; fail "moetrain $*: no '$pattern'"; }
  [ ! -e "$WORK/never" ] || fail "moetrain $* created the run directory"
  echo "ok: $* -> $(grep -m1 -E -e "$pattern" "$WORK/out.log" | sed 's/^.*error: //' | cut -c1-140)"
}

for key in model.rope_theta model.norm_eps model.init_std loss.bias_gamma loss.sp_coef train.lr \
           train.eps train.grad_clip train.weight_decay; do
  expect_usage "$key: expected a finite number" --set "$key=.inf"
  expect_usage "$key: expected a finite number" --set "$key=-.inf"
  expect_usage "$key: expected a finite number" --set "$key=.nan"
done
expect_usage "loss.bias_gamma: expected a value in \[0, 1\]" --set loss.balance=bias --set loss.bias_gamma=1e300
expect_usage "model.expert_ffn_dim: expected a value <= " --set model.expert_ffn_dim=4611686018427387904
expect_usage "train.threads: expected a value <= 1024" --set train.threads=100000
expect_usage "model.d_model: expected a value <= " --dry-run --set model.d_model=1e15
expect_usage "model.vocab_size: expected a value <= " --dry-run --set model.vocab_size=1e12
# Each key within its limit, the product past int64: the dry run names the keys instead of
# printing negative counts.
expect_usage "model.expert_ffn_dim" --dry-run --set model.d_model=1048576 --set model.n_heads=1 \
  --set model.n_kv_heads=1 --set model.head_dim=2 --set model.n_experts=65536 \
  --set model.expert_ffn_dim=1048576 --set model.n_layers=65536
"$MOEEVAL" --threads 100000 > "$WORK/eval.log" 2>&1 && fail "moeeval --threads 100000 accepted"
grep -q "threads" "$WORK/eval.log" || { cat "$WORK/eval.log"; fail "moeeval --threads: no message"; }

# A NaN in a checkpoint's weights (manifest removed, as in a hand-edited checkpoint).
"$MOETRAIN" --config "$WORK/tiny.yaml" --set train.max_steps=2 --set run.save_every=2 \
  --set loss.balance=bias > "$WORK/train.log" 2>&1 || { cat "$WORK/train.log"; fail "training failed"; }
CK=$(ls -d "$WORK"/run/checkpoints/step_* | tail -1)
cp -r "$CK" "$WORK/nan_ck"
rm "$WORK/nan_ck/manifest.json"
python3 - "$WORK/nan_ck/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
t = header["model.layers.1.mlp.gate.e_score_correction_bias"]
assert t["dtype"] == "F32", t
begin = 8 + n + t["data_offsets"][0]
data[begin + 4:begin + 8] = struct.pack("<f", float("nan"))  # element 1
open(path, "wb").write(bytes(data))
PY
set +e
"$MOEEVAL" --checkpoint "$WORK/nan_ck" --ppl "$FORTUNES/wisdom" --threads 1 > "$WORK/eval.log" 2>&1
code=$?
set -e
[ "$code" = 2 ] || { cat "$WORK/eval.log"; fail "moeeval on NaN weights exited $code, expected 2"; }
grep -q 'model.layers.1.mlp.gate.e_score_correction_bias.*non-finite' "$WORK/eval.log" \
  || { cat "$WORK/eval.log"; fail "moeeval on NaN weights: no message naming the tensor"; }
echo "ok: moeeval on NaN weights -> $(grep -m1 non-finite "$WORK/eval.log" | cut -c1-160)"
echo PASS
