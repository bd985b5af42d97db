#!/usr/bin/env bash
# moeeval's zero-shot prompts on the real task files in data/zeroshot equal an independent Python
# rendering of the harness's rules (tools/reference/check_task_prompts.py): every document's
# contexts, continuations, gold index and acc_norm character counts; for MMLU also every CSV record
# as parsed (libcsv here, Python's csv module there), 0-shot and 5-shot; for TruthfulQA MC2 the labels.
# Usage: task_prompts.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD_DIR="$(cd "${1:?usage: task_prompts.sh BUILD_DIR SOURCE_DIR}" && pwd)"
SOURCE_DIR="$(cd "${2:?usage: task_prompts.sh BUILD_DIR SOURCE_DIR}" && pwd)"
TASKS="$SOURCE_DIR/data/zeroshot"
[ -d "$TASKS" ] || { echo "task_prompts: FAIL: $TASKS not found (the repository ships it)" >&2; exit 1; }
DUMP="$BUILD_DIR/tmp/task_prompts-$$"
rm -rf "$DUMP"; mkdir -p "$DUMP"
"$BUILD_DIR/apps/moeeval" --dump-requests "$DUMP" --task-dir "$TASKS" --log-level error \
  --tasks hellaswag,piqa,arc_easy,openbookqa,boolq,lambada_openai,copa,mmlu,truthfulqa_mc1,truthfulqa_mc2
/usr/bin/python3 "$SOURCE_DIR/tools/reference/check_task_prompts.py" "$TASKS" "$DUMP"
# MMLU 5-shot: the first 5 dev records of each subject before every question (all 285 dev records).
rm -rf "$DUMP"; mkdir -p "$DUMP"
"$BUILD_DIR/apps/moeeval" --dump-requests "$DUMP" --task-dir "$TASKS" --log-level error \
  --tasks mmlu --num-fewshot 5
/usr/bin/python3 "$SOURCE_DIR/tools/reference/check_task_prompts.py" "$TASKS" "$DUMP" --num-fewshot 5
rm -rf "$DUMP"
