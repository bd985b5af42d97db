#!/usr/bin/env bash
# The repository works alone: a fresh `git clone` of the committed HEAD, with no `shared` folder
# beside it (where the development checkouts keep data the repository must not depend on), holds
# every path its configs name, and no file in it names that sibling folder.
#   - every configs/*.yaml passes `moetrain --config X --dry-run` run from the clone's root
#     (--dry-run checks every data.train / data.valid / data.tokenizer path, lib/train/run_setup.h);
#   - `git grep '\.\./shared'` finds nothing in the clone.
# The clone is of HEAD: uncommitted changes are not tested (commit first). Exits 77 (skipped)
# when SOURCE_DIR is not a git checkout, e.g. an unpacked release tarball.
# Usage: isolated_clone.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD_DIR="$(cd "${1:?usage: isolated_clone.sh BUILD_DIR SOURCE_DIR}" && pwd)"
SOURCE_DIR="$(cd "${2:?usage: isolated_clone.sh BUILD_DIR SOURCE_DIR}" && pwd)"
MOETRAIN="$BUILD_DIR/apps/moetrain"
fail() { echo "isolated_clone: FAIL: $*" >&2; exit 1; }

[ -x "$MOETRAIN" ] || fail "$MOETRAIN not built"
command -v git >/dev/null || fail "git is not installed (tools/setup.sh installs it)"
if ! HEAD="$(git -C "$SOURCE_DIR" rev-parse --verify HEAD 2>/dev/null)"; then
  echo "isolated_clone: SKIPPED: $SOURCE_DIR is not a git checkout (nothing to clone)" >&2
  exit 77
fi

ROOT="$BUILD_DIR/tmp/isolated-$$"
REPO="$ROOT/repo"
rm -rf "$ROOT"
mkdir -p "$ROOT"
trap 'rm -rf "$ROOT"' EXIT
# --no-local copies objects through the git transport (as a clone from a server would) instead
# of hard-linking the source's object store; the clone therefore holds only committed content.
git clone --quiet --no-local --no-checkout "$SOURCE_DIR" "$REPO"
git -C "$REPO" -c advice.detachedHead=false checkout --quiet "$HEAD"
SIBLING="$(dirname "$REPO")/shared"
[ ! -e "$SIBLING" ] || fail "$SIBLING exists; the clone must have nothing beside it"
echo "isolated_clone: cloned $HEAD into $REPO (no $SIBLING)"

# No file of the repository names the sibling folder (the pattern matches two dots, a slash and
# the folder name; written escaped so that this script does not match itself).
if hits="$(git -C "$REPO" grep -n '\.\./shared')"; then
  fail "files of the repository name the sibling shared folder:"$'\n'"$hits"
fi

# Every config's paths exist in the clone alone.
n=0
for cfg in "$REPO"/configs/*.yaml; do
  name="configs/$(basename "$cfg")"
  if ! out="$(cd "$REPO" && "$MOETRAIN" --config "$name" --dry-run --log-level error 2>&1)"; then
    fail "moetrain --config $name --dry-run failed in the isolated clone:"$'\n'"$out"
  fi
  line="$(grep '^data: ' <<<"$out")" || fail "$name: --dry-run printed no data line:"$'\n'"$out"
  echo "  $name: $line"
  n=$((n + 1))
done
[ "$n" -ge 1 ] || fail "no config under $REPO/configs"

# The check itself can fail: a config naming a file the clone lacks is refused (exit 2, naming it).
sed 's#data/corpora/gutenberg_gitenberg/98.txt#data/corpora/no_such_book.txt#' \
  "$REPO/configs/gutenberg_small_vanilla.yaml" >"$ROOT/missing.yaml"
grep -q no_such_book "$ROOT/missing.yaml" || fail "could not write the missing-path config"
set +e
out="$(cd "$REPO" && "$MOETRAIN" --config "$ROOT/missing.yaml" --dry-run --log-level error 2>&1)"
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "a config with a missing data path gave exit $rc, expected 2:"$'\n'"$out"
grep -q 'no_such_book.txt' <<<"$out" || fail "the error does not name the missing path: $out"
echo "isolated_clone: PASS ($n configs)"
