#!/usr/bin/env bash
# The paper's ablation sweep: trains lb, lb+sp, lb+cp and lb+sp+cp on the same config, seed and
# data order, evaluates every run with moeeval and prints the ablation table (mean ± std over
# seeds): validation perplexity, bits per byte, zero-shot averages, routing entropy, expert
# overlap and pathway top-1 accuracy; with moeinfer built, also the pathway-based inference
# figures: the fraction of token-to-expert hops that cross devices under path-aware (and
# round-robin) expert placement at --ep-devices P, calibrated on routing traces of the training
# text and measured on the evaluation text, and the expert-cache hit rate with pathway prefetch
# (and LRU alone) at C = E / 2 (at least top_k) in a short batch-1 decode run.
#
#   tools/ablate.sh CONFIG [--set KEY=VALUE ...] [--seeds 1,2,3] [--archs vanilla,deepseek]
#                   [--cells lb,lb+sp,lb+cp,lb+sp+cp] [--steps N] [--out DIR]
#                   [--tasks LIST --task-dir DIR] [--suite paper] [--limit N]
#                   [--eval-text FILE ...] [--ood-text FILE ...] [--routing-max-tokens N]
#                   [--threads N] [--build DIR] [--ep-devices P] [--infer-tokens N]
#                   [--device cpu|cuda|cuda:N]
#
# --device runs training (train.device) and evaluation (moeeval --device) on that backend
# (default: the config's train.device for training, cpu for evaluation). The moeinfer figures
# (routing traces, the batch-1 expert-cache run) stay on the CPU backend.
# --suite paper evaluates the paper's six zero-shot tasks (moeeval --suite paper; needs
# --task-dir) and adds their mean to the table ("paper suite").
#
# Layout: DIR/<arch>/<cell>/seed<N>/ is one moetrain run (run.out_dir), with eval.json (moeeval
# --out) beside its checkpoints; DIR/table.md is the table.
# Restartable: a run whose newest checkpoint is at train.max_steps is never trained again; a run
# with a checkpoint short of it is continued with moetrain --resume; a run that died before its
# first checkpoint is moved aside (DIR/.../seedN.failed-<time>) and started again. eval.json is
# rewritten only when it is older than the newest checkpoint; so is infer.json (moeinfer's figures,
# beside the traces calib.moetrace / heldout.moetrace it was computed from).
# Same data order: every cell of a seed uses train.seed = that seed, and every run after the
# first reuses the first run's tokenizer (data.tokenizer), so all runs see identical token shards.
# Evaluation text: --eval-text, else the config's data.valid files (an error when neither exists).
# Out-of-domain text: --ood-text files are scored for perplexity only (not routing); the table
# reports them apart from the evaluation texts (ablate_table.py --ood).
# Architectures: --archs switches model.arch and model.n_shared_experts (deepseek: >= 1, kept
# from the config when it has some, else 1; vanilla: 0); without --archs the config's arch.
set -euo pipefail

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "ablate.sh: error: $*" >&2; exit 2; }

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
BUILD="${ROOT}/build"
PYTHON="${PYTHON:-/usr/bin/python3}"
CONFIG=""; SETS=(); SEEDS="1"; ARCHS=""; CELLS="lb,lb+sp,lb+cp,lb+sp+cp"; STEPS=""; OUT="runs/ablate"
TASKS=""; SUITE=""; TASK_DIR=""; LIMIT=0; EVAL_TEXT=(); OOD_TEXT=(); ROUTING_MAX=0; THREADS=0
EP_DEVICES=2
DEVICE=""
INFER_TOKENS=20000

[ $# -ge 1 ] || usage
while [ $# -gt 0 ]; do
  case "$1" in
    --set) [ $# -ge 2 ] || die "--set needs KEY=VALUE"; SETS+=("$2"); shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --archs) ARCHS="$2"; shift 2 ;;
    --cells) CELLS="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --tasks) TASKS="$2"; shift 2 ;;
    --suite) SUITE="$2"; shift 2 ;;
    --task-dir) TASK_DIR="$2"; shift 2 ;;
    --limit) LIMIT="$2"; shift 2 ;;
    --eval-text) EVAL_TEXT+=("$2"); shift 2 ;;
    --ood-text) [ -f "$2" ] || die "--ood-text $2 not found"; OOD_TEXT+=("$2"); shift 2 ;;
    --routing-max-tokens) ROUTING_MAX="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --build) BUILD="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --ep-devices) EP_DEVICES="$2"; shift 2 ;;
    --infer-tokens) INFER_TOKENS="$2"; shift 2 ;;
    -h|--help) usage ;;
    --*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$CONFIG" ] || die "one CONFIG only (got $CONFIG and $1)"; CONFIG="$1"; shift ;;
  esac
done
[ -n "$CONFIG" ] || die "CONFIG is required"
[ -f "$CONFIG" ] || die "config $CONFIG not found"
MOETRAIN="$BUILD/apps/moetrain"; MOEEVAL="$BUILD/apps/moeeval"; MOEINFER="$BUILD/apps/moeinfer"
[ -x "$MOETRAIN" ] && [ -x "$MOEEVAL" ] || die "$MOETRAIN / $MOEEVAL not built (--build DIR)"
[[ "$SEEDS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--seeds expects a list like 1,2,3, got '$SEEDS'"
[ -z "$STEPS" ] || [[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || die "--steps expects a positive integer"
for cell in ${CELLS//,/ }; do
  case "$cell" in lb|lb+sp|lb+cp|lb+sp+cp|lb+z|lb+z+sp+cp) ;; *) die "unknown cell '$cell'" ;; esac
done
for arch in ${ARCHS//,/ }; do
  case "$arch" in vanilla|deepseek) ;; *) die "unknown arch '$arch' (vanilla or deepseek)" ;; esac
done

# Resolved config value (KEY like train.max_steps) of CONFIG with the given overrides.
config_value() {  # config_value KEY [override...]
  local key="$1"; shift
  local args=()
  for s in "$@"; do args+=(--set "$s"); done
  "$MOETRAIN" --config "$CONFIG" "${args[@]}" --dump-config 2>/dev/null |
    "$PYTHON" -c 'import sys, yaml; c = yaml.safe_load(sys.stdin); v = c
for k in sys.argv[1].split("."): v = v[k]
print(",".join(map(str, v)) if isinstance(v, list) else v)' "$key"
}

# Step of the newest complete checkpoint of a run (0 when none).
latest_step() {
  "$PYTHON" - "$1" <<'EOF'
import json, os, re, sys
root = os.path.join(sys.argv[1], "checkpoints")
steps = sorted(int(d[5:]) for d in (os.listdir(root) if os.path.isdir(root) else [])
               if re.fullmatch(r"step_\d{8}", d) and os.path.isfile(os.path.join(root, d, "manifest.json")))
print(steps[-1] if steps else 0)
EOF
}

DEV_ARGS=()
[ -z "$DEVICE" ] || DEV_ARGS=(--device "$DEVICE")
mkdir -p "$OUT"
ARCH_LIST="${ARCHS:-$(config_value model.arch)}"
CONFIG_SHARED="$(config_value model.n_shared_experts)"
TOKENIZER="$(config_value data.tokenizer)"
[ "$TOKENIZER" = "None" ] && TOKENIZER=""
for arch in ${ARCH_LIST//,/ }; do
  ARCH_SETS=()
  if [ -n "$ARCHS" ]; then
    if [ "$arch" = vanilla ]; then ARCH_SETS=(model.arch=vanilla model.n_shared_experts=0)
    else ARCH_SETS=(model.arch=deepseek "model.n_shared_experts=$([ "$CONFIG_SHARED" -ge 1 ] && echo "$CONFIG_SHARED" || echo 1)")
    fi
  fi
  for seed in ${SEEDS//,/ }; do
    for cell in ${CELLS//,/ }; do
      run="$OUT/$arch/$cell/seed$seed"
      overrides=("${ARCH_SETS[@]}" "${SETS[@]}" "train.seed=$seed" "loss.losses=[${cell//+/,}]"
                 "run.out_dir=$run")
      [ -z "$DEVICE" ] || overrides+=("train.device=$DEVICE")
      [ -z "$STEPS" ] || overrides+=("train.max_steps=$STEPS")
      [ -z "$TOKENIZER" ] || overrides+=("data.tokenizer=$TOKENIZER")
      target="$(config_value train.max_steps "${overrides[@]}")"
      have="$(latest_step "$run")"
      if [ "$have" -ge "$target" ]; then
        echo "ablate: $run finished (step $have), not retrained"
      elif [ "$have" -gt 0 ]; then
        echo "ablate: $run resumes from step $have of $target"
        "$MOETRAIN" --resume "$run"
      else
        if [ -e "$run" ]; then
          aside="$run.failed-$(date +%Y%m%d-%H%M%S)"
          echo "ablate: $run has no checkpoint (an interrupted start); moved to $aside"
          mv "$run" "$aside"
        fi
        echo "ablate: training $run ($arch, losses ${cell//+/,}, seed $seed, $target steps)"
        args=(); for s in "${overrides[@]}"; do args+=(--set "$s"); done
        "$MOETRAIN" --config "$CONFIG" "${args[@]}"
      fi
      have="$(latest_step "$run")"
      [ "$have" -ge "$target" ] || die "$run stopped at step $have of $target; rerun ablate.sh to resume"
      if [ -z "$TOKENIZER" ] && [ -f "$run/tokenizer.model" ]; then
        TOKENIZER="$(cd "$(dirname "$run/tokenizer.model")" && pwd)/tokenizer.model"
      fi
      ckpt="$run/checkpoints/$(printf 'step_%08d' "$have")"
      texts=("${EVAL_TEXT[@]}")
      if [ ${#texts[@]} -eq 0 ]; then
        valid="$(config_value data.valid "${overrides[@]}")"
        [ -n "$valid" ] || die "no evaluation text: the config has no data.valid; pass --eval-text FILE"
        IFS=',' read -r -a texts <<< "$valid"
      fi
      # Pathway-based inference figures (skipped when infer.json is newer than the checkpoint).
      if [ -x "$MOEINFER" ] && ! { [ -f "$run/infer.json" ] && [ "$run/infer.json" -nt "$ckpt/manifest.json" ]; }; then
        IFS=',' read -r -a train_texts <<< "$(config_value data.train "${overrides[@]}")"
        n_exp="$(config_value model.n_experts "${overrides[@]}")"
        top_k="$(config_value model.top_k "${overrides[@]}")"
        max_seq="$(config_value model.max_seq_len "${overrides[@]}")"
        cap=$(( n_exp / 2 > top_k ? n_exp / 2 : top_k ))
        echo "ablate: routing traces, placement (P=$EP_DEVICES) and expert cache (C=$cap) of $ckpt"
        "$MOEINFER" --checkpoint "$ckpt" --threads "$THREADS" --trace "$run/calib.moetrace" \
          --text "${train_texts[@]}" --max-tokens "$INFER_TOKENS"
        "$MOEINFER" --checkpoint "$ckpt" --threads "$THREADS" --trace "$run/heldout.moetrace" \
          --text "${texts[@]}" --max-tokens "$INFER_TOKENS"
        "$MOEINFER" --checkpoint "$ckpt" --placement path-aware,round-robin --devices "$EP_DEVICES" \
          --calibration "$run/calib.moetrace" --heldout "$run/heldout.moetrace" -o json \
          > "$run/placement.json"
        for pf in pathway none; do
          "$MOEINFER" --checkpoint "$ckpt" --threads "$THREADS" --bench -p $(( max_seq / 4 )) \
            -n $(( max_seq / 2 )) -b 1 -r 1 --expert-cache "$cap" --prefetch "$pf" \
            --calibration "$run/calib.moetrace" -o json > "$run/cache_$pf.json" 2> /dev/null
        done
        "$PYTHON" - "$run" "$EP_DEVICES" "$cap" <<'EOF'
import json, os, sys
run, p, cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {r["placement"]: r for r in json.load(open(os.path.join(run, "placement.json")))}
hits = {pf: json.load(open(os.path.join(run, f"cache_{pf}.json")))["results"][0]
        for pf in ("pathway", "none")}
out = {"ep_devices": p, "expert_cache": cap,
       "cross_fraction_path_aware": rows["path-aware"]["heldout_cross_fraction"],
       "cross_fraction_round_robin": rows["round-robin"]["heldout_cross_fraction"],
       "prefetch_hit_rate": hits["pathway"]["expert_cache_hit_rate"],
       "lru_hit_rate": hits["none"]["expert_cache_hit_rate"]}
tmp = os.path.join(run, "infer.json.tmp")
json.dump(out, open(tmp, "w"), indent=2)
os.replace(tmp, os.path.join(run, "infer.json"))
EOF
      fi
      # Evaluation (skipped when eval.json is newer than the newest checkpoint).
      if [ -f "$run/eval.json" ] && [ "$run/eval.json" -nt "$ckpt/manifest.json" ]; then
        echo "ablate: $run/eval.json is up to date"
        continue
      fi
      eval_args=(--checkpoint "$ckpt" --out "$run/eval.json" --threads "$THREADS" "${DEV_ARGS[@]}"
                 --routing-max-tokens "$ROUTING_MAX" --ppl "${texts[@]}" "${OOD_TEXT[@]}"
                 --routing "${texts[@]}")
      if [ -n "$TASKS" ]; then eval_args+=(--tasks "$TASKS"); fi
      if [ -n "$SUITE" ]; then eval_args+=(--suite "$SUITE"); fi
      if [ -n "$TASKS" ] || [ -n "$SUITE" ]; then
        eval_args+=(--task-dir "$TASK_DIR" --limit "$LIMIT")
      fi
      echo "ablate: evaluating $ckpt"
      "$MOEEVAL" "${eval_args[@]}" > "$run/eval.txt"
    done
  done
done
table_args=("$OUT")
[ ${#OOD_TEXT[@]} -eq 0 ] || table_args+=(--ood "${OOD_TEXT[@]}")
"$PYTHON" "$HERE/ablate_table.py" "${table_args[@]}" | tee "$OUT/table.md"
