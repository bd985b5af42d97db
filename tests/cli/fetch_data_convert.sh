#!/usr/bin/env bash
# The conversion step of tools/fetch_data.sh, without a network (the download step is not
# tested): tools/data/convert.py on small files in every upstream format and on the shipped
# files that are in upstream format, read back by moeeval --dump-requests and moetrain
# (tests/cli/support/convert_check.py says what is checked).
# Usage: fetch_data_convert.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD_DIR="$(cd "${1:?usage: fetch_data_convert.sh BUILD_DIR SOURCE_DIR}" && pwd)"
SOURCE_DIR="$(cd "${2:?usage: fetch_data_convert.sh BUILD_DIR SOURCE_DIR}" && pwd)"
WORK="$BUILD_DIR/tmp/fetch_data_convert-$$"
rm -rf "$WORK"
mkdir -p "$WORK"
[ -n "${KEEP_WORK:-}" ] || trap 'rm -rf "$WORK"' EXIT
bash -n "$SOURCE_DIR/tools/fetch_data.sh"   # the download script at least parses
/usr/bin/python3 "$SOURCE_DIR/tests/cli/support/convert_check.py" "$BUILD_DIR" "$SOURCE_DIR" "$WORK"
