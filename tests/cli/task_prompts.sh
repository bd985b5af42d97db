#!/usr/bin/env bash
# moeeval's zero-shot prompts on the real task files in data/zeroshot equal an independent Python
# rendering of the harness's rules (tools/reference/check_task_prompts.py): every document's
# contexts, continuations, gold index and acc_norm character counts.
# Usage: task_prompts.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD_DIR="$(cd "${1:?usage: task_prompts.sh BUILD_DIR SOURCE_DIR}" && pwd)"
SOURCE_DIR="$(cd "${2:?usage: task_prompts.sh BUILD_DIR SOURCE_DIR}" && pwd)"
TASKS="$SOURCE_DIR/data/zeroshot"
[ -d "$TASKS" ] || { echo "task_prompts: FAIL: $TASKS not found (the repository ships it)" >&2; exit 1; }
DUMP="$BUILD_DIR/tmp/task_prompts-$$"
rm -rf "$DUMP"; mkdir -p "$DUMP"
"$BUILD_DIR/apps/moeeval" --dump-requests "$DUMP" --task-dir "$TASKS" --log-level error \
  --tasks hellaswag,piqa,arc_easy,openbookqa,boolq,lambada_openai,copa
/usr/bin/python3 "$SOURCE_DIR/tools/reference/check_task_prompts.py" "$TASKS" "$DUMP"
rm -rf "$DUMP"
