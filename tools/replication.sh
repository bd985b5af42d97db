#!/usr/bin/env bash
# The replication study of docs/replication.md: its three grids as tools/ablate.sh sweeps, with the
# evaluation texts and tasks fixed so that every run of a grid is scored the same way.
#
#   tools/replication.sh GRID [--out DIR] [--threads N] [--build DIR] [--archs LIST] [--seeds LIST]
#                             [--values LIST] [--task-limit N] [--tokenizer FILE] [--set KEY=VALUE]
#   tools/replication.sh export [--out DIR] --to RESULTS
#
#   grid-a   lb, lb+sp, lb+cp, lb+sp+cp x vanilla (configs/replication_gridA.yaml) and DeepSeekMoE
#            (configs/replication_gridA_deepseek.yaml) x seeds 1,2,3; DIR/gridA/<arch>/<cell>/seedN
#   grid-b   vanilla lb+sp+cp, seeds 1,2, with one coefficient moved over a factor of 100 around
#            the paper's lambda_sp = 2e-3 / lambda_cp = 1e-3 (the other one kept):
#            DIR/gridB/<sp|cp>_<value>/vanilla/lb+sp+cp/seedN; the centre (2e-3, 1e-3) is Grid A's
#            vanilla lb+sp+cp. No zero-shot tasks. --values sp:2e-2,cp:1e-2,... picks and orders
#            the points (default: the ends first, then the inner points).
#   grid-c   lb and lb+sp+cp x configs/gutenberg_small_{vanilla,deepseek}.yaml x --seeds (default 1):
#            DIR/gridC/<arch>/<cell>/seedN (about 1 h per run on 2 cores)
#   export   copies the small per-run files of every grid under DIR to RESULTS/<grid>/...:
#            eval.json (compact, floats to 8 significant digits), infer.json, and metrics.jsonl
#            cut to the fields the table and plots read (no checkpoints, no traces)
#
# Defaults: --out runs/replication, --threads 0 (all cores), --build build, --task-limit 500.
# Every grid is restartable (tools/ablate.sh's rules): run the same command again after an
# interruption; finished runs are neither retrained nor re-evaluated.
# Evaluation (all grids): perplexity and routing on the 4 held-out Gutenberg files of
# data/corpora/gutenberg_splits.tsv (routing: the first 50,000 tokens of each), out-of-domain
# perplexity on the State of the Union addresses 2000-2006 (data/corpora/state_union/200*.txt,
# which no run trains on); Grid A and C also the 7 zero-shot tasks, the first N documents of each.
# The tokenizer: every run of a grid uses one tokenizer, the one its first run trains
# (tools/ablate.sh), or data.tokenizer=FILE with --tokenizer FILE.
set -euo pipefail

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "replication.sh: error: $*" >&2; exit 2; }

HERE="$(cd "$(dirname "$0")" && pwd)"
GRID="${1:-}"; [ $# -ge 1 ] && shift
OUT="runs/replication"; THREADS=0; BUILD="build"; ARCHS="vanilla,deepseek"; SEEDS=""; VALUES=""
TASK_LIMIT=500; TOKENIZER=""; SETS=(); TO=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --build) BUILD="$2"; shift 2 ;;
    --device) SETS+=(--device "$2"); shift 2 ;;
    --archs) ARCHS="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --values) VALUES="$2"; shift 2 ;;
    --task-limit) TASK_LIMIT="$2"; shift 2 ;;
    --tokenizer) TOKENIZER="$2"; shift 2 ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    --to) TO="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -d data/corpora/gutenberg_nltk ] || die "run from the repository root (data/corpora not found)"

EVAL=(--eval-text data/corpora/gutenberg_nltk/austen-persuasion.txt
      --eval-text data/corpora/gutenberg_nltk/chesterton-thursday.txt
      --eval-text data/corpora/gutenberg_nltk/shakespeare-macbeth.txt
      --eval-text data/corpora/gutenberg_gitenberg/1661.txt
      --routing-max-tokens 50000)
for f in data/corpora/state_union/200*.txt; do EVAL+=(--ood-text "$f"); done
TASKS=(--tasks copa,piqa,arc_easy,hellaswag,lambada_openai,openbookqa,boolq
       --task-dir data/zeroshot --limit "$TASK_LIMIT")
COMMON=(--threads "$THREADS" --build "$BUILD" "${SETS[@]}")
[ -z "$TOKENIZER" ] || COMMON+=(--set "data.tokenizer=$TOKENIZER")

config_of() {  # config_of GRID ARCH
  case "$1:$2" in
    a:vanilla) echo configs/replication_gridA.yaml ;;
    a:deepseek) echo configs/replication_gridA_deepseek.yaml ;;
    c:vanilla) echo configs/gutenberg_small_vanilla.yaml ;;
    c:deepseek) echo configs/gutenberg_small_deepseek.yaml ;;
    *) die "unknown architecture '$2' (vanilla or deepseek)" ;;
  esac
}

case "$GRID" in
  grid-a)
    for arch in ${ARCHS//,/ }; do
      bash "$HERE/ablate.sh" "$(config_of a "$arch")" --seeds "${SEEDS:-1,2,3}" \
        --out "$OUT/gridA" "${EVAL[@]}" "${TASKS[@]}" "${COMMON[@]}"
    done ;;
  grid-b)
    points="${VALUES:-sp:2e-2,cp:1e-2,sp:2e-4,cp:1e-4,sp:6.32e-3,cp:3.16e-3,sp:6.32e-4,cp:3.16e-4}"
    for point in ${points//,/ }; do
      key="${point%%:*}"; value="${point#*:}"
      case "$key" in sp|cp) ;; *) die "--values expects sp:V or cp:V, got '$point'" ;; esac
      [[ "$value" =~ ^[0-9.]+(e-?[0-9]+)?$ ]] || die "bad coefficient '$value'"
      bash "$HERE/ablate.sh" "$(config_of a vanilla)" --cells lb+sp+cp --seeds "${SEEDS:-1,2}" \
        --set "loss.${key}_coef=$value" --out "$OUT/gridB/${key}_$value" "${EVAL[@]}" \
        "${COMMON[@]}"
    done ;;
  grid-c)
    for arch in ${ARCHS//,/ }; do
      bash "$HERE/ablate.sh" "$(config_of c "$arch")" --cells lb,lb+sp+cp --seeds "${SEEDS:-1}" \
        --out "$OUT/gridC" "${EVAL[@]}" "${TASKS[@]}" "${COMMON[@]}"
    done ;;
  export)
    [ -n "$TO" ] || die "export needs --to RESULTS"
    "${PYTHON:-/usr/bin/python3}" - "$OUT" "$TO" <<'EOF'
import glob, json, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
KEEP = ("type", "step", "tokens", "tok_per_s", "loss", "lm", "lb", "z", "sp", "cp", "val_loss",
        "val_ppl", "val_bpb")


def rounded(x):
    if isinstance(x, float):
        return float(f"{x:.8g}")
    if isinstance(x, list):
        return [rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    return x


n = 0
for ev in sorted(glob.glob(os.path.join(src, "grid*", "**", "seed*", "eval.json"), recursive=True)):
    run = os.path.dirname(ev)
    out = os.path.join(dst, os.path.relpath(run, src))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump(rounded(json.load(open(ev))), f, separators=(",", ":"))
    if os.path.isfile(os.path.join(run, "infer.json")):
        shutil.copyfile(os.path.join(run, "infer.json"), os.path.join(out, "infer.json"))
    if os.path.isfile(os.path.join(run, "metrics.jsonl")):
        with open(os.path.join(run, "metrics.jsonl")) as f, \
                open(os.path.join(out, "metrics.jsonl"), "w") as g:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                cut = {k: rec[k] for k in KEEP if k in rec}
                if "routing" in rec:
                    cut["routing"] = [{k: r[k] for k in ("layer", "entropy", "topk_mass") if k in r}
                                      for r in rec["routing"]]
                g.write(json.dumps(rounded(cut), separators=(",", ":")) + "\n")
    n += 1
print(f"replication.sh: exported {n} runs from {src} to {dst}")
EOF
    ;;
  *) usage ;;
esac
