#!/usr/bin/env bash
# moeinfer --bench against its peers on the same model, in one run (docs/benchmarks.md):
#   - transformers' generate() on the Hugging Face export (tools/hf/bench_generate.py);
#   - llama.cpp on a GGUF conversion of that export (tools/hf/convert_gguf.py, f32): llama-bench
#     (prompt processing pp P, and text generation tg N at depth P, one sequence) and
#     llama-batched-bench (P-token prompts then N decode passes for B parallel sequences), f32
#     weights as moeinfer, llama.cpp's default f16 KV cache (llama-bench accepts no f32 cache),
#     when tools/setup_llamacpp.sh has built them (opt-in; the column is left out otherwise).
# The tools take turns, one repetition each, R times (every tool warms up before its timed pass),
# so that the load of a shared machine falls on all of them alike; each figure is the median of
# the R repetitions. Load averages are recorded at every turn. Finally the greedy continuations of
# moeinfer and transformers are compared token for token on two prompts (tools/hf/greedy_check.py).
#
#   tools/bench_infer_peers.sh CHECKPOINT [--out DIR] [--threads N] [-r N] [-p 32,96] [-n 32]
#                              [-b 1,4]
#
# Needs tools/hf/venv (tools/setup_hf.sh). Prints markdown on stdout; raw outputs stay in DIR.
set -euo pipefail
die() { echo "bench_infer_peers.sh: error: $*" >&2; exit 2; }
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
BUILD="${BUILD:-$ROOT/build}"
INFER="$BUILD/apps/moeinfer"
PY="$ROOT/tools/hf/venv/bin/python"
LLAMA_BIN="$ROOT/tools/llamacpp/build/bin"
[ -x "$INFER" ] || die "$INFER not built"
[ -x "$PY" ] || die "$PY missing: run tools/setup_hf.sh"
[ $# -ge 1 ] || die "usage: bench_infer_peers.sh CHECKPOINT [--out DIR] [--threads N] [-r N] [-p L] [-n L] [-b L]"
CK="$1"; shift
OUT=""; THREADS=2; REPS=3; P=32,96; N=32; B=1,4
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    -r) REPS="$2"; shift 2 ;;
    -p) P="$2"; shift 2 ;;
    -n) N="$2"; shift 2 ;;
    -b) B="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ "$REPS" -ge 1 ] 2>/dev/null || die "-r must be >= 1"
[ -n "$OUT" ] || OUT="$(mktemp -d)"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
load() { cut -d' ' -f1-3 /proc/loadavg; }
max_of() { tr ',' '\n' <<< "$1" | sort -n | tail -n 1; }

HF="$OUT/hf"
if [ ! -f "$HF/config.json" ]; then
  rm -rf "$HF"
  "$PY" "$ROOT/tools/hf/export_hf.py" "$CK" "$HF" > "$OUT/export.log" 2>&1 ||
    { cat "$OUT/export.log" >&2; die "export_hf.py failed"; }
fi
LLAMA=0
if [ -x "$LLAMA_BIN/llama-bench" ] && [ -x "$LLAMA_BIN/llama-batched-bench" ]; then
  LLAMA=1
  GGUF="$OUT/model-f32.gguf"
  if [ ! -f "$GGUF" ]; then
    "$PY" "$ROOT/tools/hf/convert_gguf.py" "$HF" "$GGUF" > "$OUT/convert.log" 2>&1 ||
      { tail -n 20 "$OUT/convert.log" >&2; die "GGUF conversion failed (log: $OUT/convert.log)"; }
  fi
  KV=$(( $(max_of "$B") * ($(max_of "$P") + $(max_of "$N")) ))
else
  echo "bench_infer_peers: $LLAMA_BIN/llama-bench not built (tools/setup_llamacpp.sh): no llama.cpp column" >&2
fi

: > "$OUT/load.txt"
for rep in $(seq 1 "$REPS"); do
  echo "bench_infer_peers: repetition $rep/$REPS" >&2
  echo "rep $rep moeinfer $(load)" >> "$OUT/load.txt"
  "$INFER" --checkpoint "$CK" --threads "$THREADS" --bench -p "$P" -n "$N" -b "$B" -r 1 -o json \
    > "$OUT/moeinfer.$rep.json" 2> "$OUT/moeinfer.$rep.err"
  echo "rep $rep transformers $(load)" >> "$OUT/load.txt"
  "$PY" "$ROOT/tools/hf/bench_generate.py" "$HF" -p "$P" -n "$N" -b "$B" -r 1 \
    --threads "$THREADS" --seed "$rep" -o json > "$OUT/transformers.$rep.json" 2> "$OUT/transformers.$rep.err"
  if [ "$LLAMA" = 1 ]; then
    echo "rep $rep llama.cpp $(load)" >> "$OUT/load.txt"
    "$LLAMA_BIN/llama-bench" -m "$GGUF" -t "$THREADS" -r 1 -p "$P" -n 0 -o jsonl \
      > "$OUT/llama-bench-pp.$rep.jsonl" 2> "$OUT/llama-bench.$rep.err"
    "$LLAMA_BIN/llama-bench" -m "$GGUF" -t "$THREADS" -r 1 -p 0 -n "$N" -d "$P" -o jsonl \
      > "$OUT/llama-bench-tg.$rep.jsonl" 2>> "$OUT/llama-bench.$rep.err"
    "$LLAMA_BIN/llama-batched-bench" -m "$GGUF" -t "$THREADS" -tb "$THREADS" -c "$KV" \
      -npp "$P" -ntg "$N" -npl "$B" --output-format jsonl \
      > "$OUT/batched-bench.$rep.jsonl" 2> "$OUT/batched-bench.$rep.err"
  fi
done
echo "end $(load)" >> "$OUT/load.txt"

printf 'The meaning of life is\nA fool and his money are soon parted.\n' > "$OUT/prompts.txt"
GREEDY=$("$PY" "$ROOT/tools/hf/greedy_check.py" "$CK" "$HF" "$OUT/prompts.txt" --moeinfer "$INFER" \
         --max-new-tokens 24 2> "$OUT/greedy.err" | tail -n 1) || GREEDY="greedy_check FAILED: $(tail -n 3 "$OUT/greedy.err")"

LLAMA_BIN="$LLAMA_BIN" /usr/bin/python3 - "$OUT" "$REPS" "$LLAMA" "$THREADS" "$CK" "$P" "$N" "$B" "$GREEDY" <<'PY'
import glob, json, os, statistics, sys
out, reps, llama, threads, ck, P, N, B, greedy = sys.argv[1:]
reps, llama = int(reps), llama == "1"
stamp = os.path.join(os.path.dirname(os.environ["LLAMA_BIN"]), "..", ".moe-llamacpp")
llama_version = open(stamp).read().split()[0] if os.path.exists(stamp) else "?"
med = statistics.median

def jl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]

moe, hf, bb, pp, tg = {}, {}, {}, {}, {}
meta = None
for r in range(1, reps + 1):
    for x in json.load(open(f"{out}/moeinfer.{r}.json"))["results"]:
        k = (x["p"], x["n"], x["b"])
        moe.setdefault(k, []).append((x["prefill_tok_s"]["mean"], x["decode_tok_s"]["mean"]))
    t = json.load(open(f"{out}/transformers.{r}.json"))
    meta = t["meta"]
    for x in t["results"]:
        hf.setdefault((x["p"], x["n"], x["b"]), []).append((x["prefill_tok_s"], x["decode_tok_s"]))
    if llama:
        for x in jl(f"{out}/batched-bench.{r}.jsonl"):
            bb.setdefault((x["pp"], x["tg"], x["pl"]), []).append((x["speed_pp"], x["speed_tg"]))
        for x in jl(f"{out}/llama-bench-pp.{r}.jsonl"):
            pp.setdefault(x["n_prompt"], []).append(x["avg_ts"])
        for x in jl(f"{out}/llama-bench-tg.{r}.jsonl"):
            tg.setdefault((x["n_gen"], x["n_depth"]), []).append(x["avg_ts"])

def cell(d, k, i):
    v = d.get(k)
    if not v:
        return "-"
    xs = [x[i] for x in v]
    return f"{med(xs):.0f}" + (f" [{min(xs):.0f}-{max(xs):.0f}]" if len(xs) > 1 else "")

print(f"### moeinfer against transformers and llama.cpp (`--threads {threads}`, median of {reps} "
      "[min-max])")
print()
print(f"`tools/bench_infer_peers.sh {ck} -r {reps} --threads {threads} -p {P} -n {N} -b {B}`; "
      f"transformers {meta['transformers']} on torch {meta['torch']} ({meta['threads']} threads, "
      f"{meta['attn_implementation']} attention, {meta['model_type']})"
      + (f"; llama.cpp of llama-cpp-python {llama_version} (GGUF f32), llama-batched-bench"
         if llama else "; llama.cpp not built") + ".")
print()
cols = ["moeinfer", "transformers"] + (["llama.cpp"] if llama else [])
print("| p | n | b | " + " | ".join(f"prefill tok/s {c}" for c in cols) + " | "
      + " | ".join(f"decode tok/s {c}" for c in cols) + " |")
print("|--:|--:|--:|" + "--:|" * (2 * len(cols)))
for k in sorted(moe, key=lambda k: (k[2], k[0], k[1])):
    srcs = [moe, hf] + ([bb] if llama else [])
    print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cell(s, k, 0) for s in srcs) + " | "
          + " | ".join(cell(s, k, 1) for s in srcs) + " |")
if llama:
    print()
    print("llama-bench (one sequence): " + ", ".join(
        [f"pp{p} {med(v):.0f} [{min(v):.0f}-{max(v):.0f}] tok/s" for p, v in sorted(pp.items())]
        + [f"tg{n} @ d{d} {med(v):.0f} [{min(v):.0f}-{max(v):.0f}] tok/s"
           for (n, d), v in sorted(tg.items())]))
print()
print("Load average (1/5/15 min) at each turn: " + "; ".join(
    l.strip() for l in open(f"{out}/load.txt")))
print()
print(greedy)
PY
