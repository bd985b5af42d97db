#!/usr/bin/env bash
# Downloads the full-size data a real run needs and converts it into the layouts moe-spec reads
# (tools/data/convert.py). Needs a network, curl and python3 (both in tools/setup.sh).
#
#   tools/fetch_data.sh [--out DIR] [--tasks-only | --corpus-only] [--c4-train-shards N]
#
# DIR (default data/full, ignored by git) receives:
#   DIR/download/<task>/...   the upstream files as published (kept; a rerun skips them)
#   DIR/zeroshot/             moeeval --task-dir DIR/zeroshot: hellaswag, piqa, arc_easy,
#                             arc_challenge, openbookqa, winogrande, boolq, sciq, lambada_openai,
#                             copa, and MMLU (mmlu/test, mmlu/dev: the CSVs as published)
#   DIR/c4/train.jsonl        C4 (en) training shards 00000.. (~356k documents, ~0.3 GB compressed each)
#   DIR/c4/valid.jsonl        C4 (en) validation shard 00000 (45k documents)
#   Train with: --set 'data.train=[DIR/c4/train.jsonl]' --set 'data.valid=[DIR/c4/valid.jsonl]'
#
# The URLs are listed below and in data/README.md ("Full-size data"). The conversion step is
# tested in ctest (cli_fetch_data_convert) on small files in each upstream format, and this script
# with a stand-in curl serving them; the real downloads are not tested (no network there).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=data/full
DO_TASKS=1
DO_CORPUS=1
C4_SHARDS=1
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --tasks-only) DO_CORPUS=0; shift ;;
    --corpus-only) DO_TASKS=0; shift ;;
    --c4-train-shards) C4_SHARDS="${2:?--c4-train-shards needs a number}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "fetch_data.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ "$C4_SHARDS" =~ ^[0-9]+$ ]] && [ "$C4_SHARDS" -ge 1 ] && [ "$C4_SHARDS" -le 1024 ] ||
  { echo "fetch_data.sh: --c4-train-shards must be 1..1024, found '$C4_SHARDS'" >&2; exit 2; }
command -v curl >/dev/null || { echo "fetch_data.sh: curl is missing (apt-get install curl)" >&2; exit 2; }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

DL="$OUT/download"
# fetch SUBDIR URL: DL/SUBDIR/<file name of the URL>, skipped when already complete.
fetch() {
  local dir="$DL/$1" url="$2" file
  file="$dir/$(basename "${url%%\?*}")"
  mkdir -p "$dir"
  if [ -s "$file" ]; then
    echo "have $file"
    return
  fi
  echo "fetching $url"
  curl --fail --location --retry 3 --silent --show-error --output "$file.part" "$url"
  mv "$file.part" "$file"
}

if [ "$DO_TASKS" = 1 ]; then
  fetch hellaswag      https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl
  fetch piqa           https://yonatanbisk.com/piqa/data/valid.jsonl
  fetch piqa           https://yonatanbisk.com/piqa/data/valid-labels.lst
  fetch arc            https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip
  fetch openbookqa     https://ai2-public-datasets.s3.amazonaws.com/open-book-qa/OpenBookQA-V1-Sep2018.zip
  fetch winogrande     https://storage.googleapis.com/ai2-mosaic/public/winogrande/winogrande_1.1.zip
  fetch boolq          https://dl.fbaipublicfiles.com/glue/superglue/data/v2/BoolQ.zip
  fetch sciq           https://ai2-public-datasets.s3.amazonaws.com/sciq/SciQ.zip
  fetch mmlu           https://people.eecs.berkeley.edu/~hendrycks/data.tar
  fetch lambada_openai https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl
  fetch copa           https://dl.fbaipublicfiles.com/glue/superglue/data/v2/COPA.zip
  "$PY" tools/data/convert.py tasks --src "$DL" --out "$OUT/zeroshot" --strict
fi

if [ "$DO_CORPUS" = 1 ]; then
  C4=https://huggingface.co/datasets/allenai/c4/resolve/main/en
  shards=()
  for ((i = 0; i < C4_SHARDS; i++)); do
    name="c4-train.$(printf '%05d' "$i")-of-01024.json.gz"
    fetch c4 "$C4/$name"
    shards+=("$DL/c4/$name")
  done
  fetch c4 "$C4/c4-validation.00000-of-00008.json.gz"
  "$PY" tools/data/convert.py corpus --src "${shards[@]}" --out "$OUT/c4/train.jsonl"
  "$PY" tools/data/convert.py corpus --src "$DL/c4/c4-validation.00000-of-00008.json.gz" \
    --out "$OUT/c4/valid.jsonl"
fi
echo "fetch_data.sh: done; task files in $OUT/zeroshot, corpus in $OUT/c4"
