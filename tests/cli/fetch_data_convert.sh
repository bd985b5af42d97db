#!/usr/bin/env bash
# The conversion step of tools/fetch_data.sh, without a network (the download step is not
# tested): tools/data/convert.py on small files in every upstream format and on the shipped
# files that are in upstream format, read back by moeeval --dump-requests and moetrain
# (tests/cli/support/convert_check.py says what is checked). Then fetch_data.sh itself runs with
# a stand-in `curl` that serves those small files by name: every URL's file name must be one the
# converter takes, and the script must hand them to it (its --strict count check then refuses the
# small task files, as it must; the small C4 shard converts).
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

# fetch_data.sh with a stand-in curl: `curl ... --output FILE URL` copies the fixture whose name
# is the URL's last component (the real curl is never called: nothing leaves the machine).
STUB="$WORK/stub-bin"
mkdir -p "$STUB"
cat >"$STUB/curl" <<STUBEOF
#!/usr/bin/env bash
out=""; url=""
while [ \$# -gt 0 ]; do
  case "\$1" in --output) out="\$2"; shift 2 ;; --*) shift ;; *) url="\$1"; shift ;; esac
done
src="\$(find "$WORK/download" "$WORK/c4" -name "\$(basename "\$url")" -type f | head -1)"
[ -n "\$src" ] || { echo "stub curl: no fixture for \$url" >&2; exit 22; }
echo "\$url" >>"$WORK/urls.txt"
cp "\$src" "\$out"
STUBEOF
chmod +x "$STUB/curl"
FULL="$WORK/full"
set +e
out="$(cd "$SOURCE_DIR" && PATH="$STUB:$PATH" bash tools/fetch_data.sh --out "$FULL" --tasks-only 2>&1)"
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "published split has 10042" <<<"$out" ||
  { echo "fetch_data_convert: FAIL: fetch_data.sh --tasks-only on the small fixtures: exit $rc (expected 2, the --strict count check):"; echo "$out"; exit 1; } >&2
[ "$(wc -l <"$WORK/urls.txt")" -eq 11 ] ||
  { echo "fetch_data_convert: FAIL: expected 11 task downloads, got:" >&2; cat "$WORK/urls.txt" >&2; exit 1; }
[ ! -e "$FULL/zeroshot" ] || { echo "fetch_data_convert: FAIL: a refused conversion wrote $FULL/zeroshot" >&2; exit 1; }
(cd "$SOURCE_DIR" && PATH="$STUB:$PATH" bash tools/fetch_data.sh --out "$FULL" --corpus-only >/dev/null)
[ "$(wc -l <"$FULL/c4/train.jsonl")" -eq 1401 ] && [ "$(wc -l <"$FULL/c4/valid.jsonl")" -eq 100 ] ||
  { echo "fetch_data_convert: FAIL: fetch_data.sh --corpus-only did not write the C4 corpus" >&2; exit 1; }
# A rerun keeps what was downloaded (no new fetch).
(cd "$SOURCE_DIR" && PATH="$STUB:$PATH" bash tools/fetch_data.sh --out "$FULL" --corpus-only >/dev/null)
[ "$(wc -l <"$WORK/urls.txt")" -eq 13 ] ||
  { echo "fetch_data_convert: FAIL: the rerun fetched again:" >&2; cat "$WORK/urls.txt" >&2; exit 1; }
echo "fetch_data_convert: fetch_data.sh with a stand-in curl: 13 URLs served, tasks refused by --strict, C4 converted, rerun fetches nothing"
