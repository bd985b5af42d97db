#!/usr/bin/env bash
# End to end: a tiny 2-cell ablation sweep (lb and lb+sp+cp, 6 steps, a 32-token model on Tiny
# Shakespeare from data/) through tools/ablate.sh: training, moeeval (perplexity, a zero-shot
# task, routing), the table; then the restart rules (a finished run is not retrained, a run cut
# back to an earlier checkpoint resumes), moeeval's side-by-side mode, and tools/plot.py.
# Usage: ablate_tiny.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD_DIR="$(cd "${1:?usage: ablate_tiny.sh BUILD_DIR SOURCE_DIR}" && pwd)"
SOURCE_DIR="$(cd "${2:?usage: ablate_tiny.sh BUILD_DIR SOURCE_DIR}" && pwd)"
DATA="$SOURCE_DIR/data"
CORPUS="$DATA/corpora/tinyshakespeare/input.txt"
fail() { echo "ablate_tiny: FAIL: $*" >&2; exit 1; }
[ -f "$CORPUS" ] || fail "$CORPUS not found (the repository ships it)"

WORK="$BUILD_DIR/tmp/ablate_tiny-$$"
rm -rf "$WORK"; mkdir -p "$WORK"
head -c 150000 "$CORPUS" > "$WORK/train.txt"
tail -c 12000 "$CORPUS" > "$WORK/valid.txt"
cat > "$WORK/tiny.yaml" <<EOF
model: {arch: vanilla, d_model: 32, n_layers: 3, n_heads: 2, n_kv_heads: 1, n_experts: 4,
        top_k: 2, expert_ffn_dim: 32, max_seq_len: 32}
loss: {losses: [lb]}
data: {train: [$WORK/train.txt], valid: [$WORK/valid.txt], tokenizer_vocab_size: 400,
       tokenizer_train_bytes: 150000}
train: {batch_size: 4, seq_len: 32, max_steps: 6, warmup_steps: 2, threads: 2}
run: {out_dir: $WORK/unused, log_every: 2, eval_every: 6, eval_batches: 2, save_every: 3}
EOF

sweep() {
  bash "$SOURCE_DIR/tools/ablate.sh" "$WORK/tiny.yaml" --cells lb,lb+sp+cp --seeds 1 --steps 6 \
    --out "$WORK/sweep" --tasks copa --task-dir "$DATA/zeroshot" --limit 8 \
    --ood-text "$DATA/corpora/state_union/2006-GWBush.txt" --threads 2 --build "$BUILD_DIR" "$@"
}

sweep > "$WORK/first.log" 2>&1 || { cat "$WORK/first.log"; fail "the sweep failed"; }
for cell in lb lb+sp+cp; do
  run="$WORK/sweep/vanilla/$cell/seed1"
  [ -d "$run/checkpoints/step_00000006" ] || fail "$run has no final checkpoint"
  [ -f "$run/eval.json" ] || fail "$run has no eval.json"
done
grep -q "L_lb,sp,cp" "$WORK/sweep/table.md" || { cat "$WORK/sweep/table.md"; fail "table lacks L_lb,sp,cp"; }
grep -q "| vanilla | L_lb " "$WORK/sweep/table.md" || fail "table lacks the L_lb row"
grep -q "Δ val ppl" "$WORK/sweep/table.md" || { cat "$WORK/sweep/table.md"; fail "no paired differences"; }
/usr/bin/python3 - "$WORK/sweep/vanilla/lb+sp+cp/seed1/eval.json" <<'EOF' || fail "eval.json content"
import json, math, sys
ev = json.load(open(sys.argv[1]))
assert ev["results"]["copa"]["sample_len"] == 8, ev["results"]
assert 0.0 <= ev["results"]["copa"]["acc,none"] <= 1.0
assert any(k.endswith("state_union/2006-GWBush.txt") for k in ev["perplexity"]), ev["perplexity"]
ppl = list(ev["perplexity"].values())[0]
assert math.isfinite(ppl["perplexity"]) and ppl["perplexity"] > 1
r = list(ev["routing"].values())[0]
assert len(r["layers"]) == 3 and len(r["pathways"]) == 2
assert not any("state_union" in k for k in ev["routing"]), "the OOD text was routed"
assert r["average"]["overlap"] is not None
EOF
# moeinfer's figures (placement at P = 2, expert cache at C = 2 of 4) reach infer.json and the table.
/usr/bin/python3 - "$WORK/sweep/vanilla/lb/seed1/infer.json" <<'EOF' || fail "infer.json content"
import json, sys
inf = json.load(open(sys.argv[1]))
assert inf["ep_devices"] == 2 and inf["expert_cache"] == 2, inf
for k in ("cross_fraction_path_aware", "cross_fraction_round_robin", "prefetch_hit_rate",
          "lru_hit_rate"):
    assert 0.0 <= inf[k] <= 1.0, (k, inf)
EOF
/usr/bin/python3 - "$WORK/sweep/table.md" <<'EOF' || fail "table OOD column"
import sys
lines = [l for l in open(sys.argv[1]) if l.startswith("|")]
head = [c.strip() for c in lines[0].strip("|\n").split("|")]
row = [c.strip() for c in lines[2].strip("|\n").split("|")]
assert float(row[head.index("OOD ppl")].split()[0]) > 1, row
EOF
grep -q "x-dev PA" "$WORK/sweep/table.md" || { cat "$WORK/sweep/table.md"; fail "table lacks x-dev PA"; }

# Restart: nothing is retrained; then cut one run back to its step-3 checkpoint: it resumes.
sweep > "$WORK/second.log" 2>&1 || { cat "$WORK/second.log"; fail "the second sweep failed"; }
[ "$(grep -c 'not retrained' "$WORK/second.log")" = 2 ] || { cat "$WORK/second.log"; fail "finished runs were retrained"; }
grep -q "up to date" "$WORK/second.log" || fail "an up-to-date eval.json was recomputed"
rm -rf "$WORK/sweep/vanilla/lb/seed1/checkpoints/step_00000006"
sweep > "$WORK/third.log" 2>&1 || { cat "$WORK/third.log"; fail "the resumed sweep failed"; }
grep -q "vanilla/lb/seed1 resumes from step 3 of 6" "$WORK/third.log" || { cat "$WORK/third.log"; fail "no resume"; }
[ -d "$WORK/sweep/vanilla/lb/seed1/checkpoints/step_00000006" ] || fail "the resumed run did not finish"

# moeeval side by side, and the plots.
"$BUILD_DIR/apps/moeeval" --checkpoint "$WORK/sweep/vanilla/lb/seed1" \
  --checkpoint "$WORK/sweep/vanilla/lb+sp+cp/seed1" --ppl "$WORK/valid.txt" \
  --out "$WORK/both.json" --threads 2 > "$WORK/side.txt" 2>&1 || { cat "$WORK/side.txt"; fail "side by side"; }
grep -q "(Δ)" "$WORK/side.txt" || { cat "$WORK/side.txt"; fail "no delta column"; }
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 "$SOURCE_DIR/tools/plot.py" --results "$WORK/sweep/vanilla/lb+sp+cp/seed1/eval.json" \
    --metrics "$WORK/sweep/vanilla/lb+sp+cp/seed1/metrics.jsonl" --out "$WORK/plots" > /dev/null
  [ "$(ls "$WORK/plots"/*.png | wc -l)" = 3 ] || fail "plot.py did not write 3 PNGs"
  /usr/bin/python3 "$SOURCE_DIR/tools/plot.py" --sweep "$WORK/sweep" --out "$WORK/sweep_plots" \
    > "$WORK/sweep_plots.log" || { cat "$WORK/sweep_plots.log"; fail "plot.py --sweep"; }
  for png in sweep_valid sweep_entropy sweep_pathways_vanilla sweep_load_vanilla; do
    [ -s "$WORK/sweep_plots/$png.png" ] || fail "plot.py --sweep did not write $png.png"
  done
else
  echo "ablate_tiny: matplotlib missing, plot check not run" >&2
fi
# Bad input: a task file that does not exist is a usage error (exit 2).
set +e
"$BUILD_DIR/apps/moeeval" --checkpoint "$WORK/sweep/vanilla/lb/seed1" --tasks winogrande \
  --task-dir "$WORK" > /dev/null 2>&1
[ $? = 2 ] || fail "a missing task file did not exit 2"
set -e
cat "$WORK/sweep/table.md"
rm -rf "$WORK"
echo "ablate_tiny: OK"
