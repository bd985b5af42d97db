#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, with ASan + UBSan, CUDA off, in build-fuzz/)
# and runs each one: first every input of its seed corpus tests/fuzz/corpus/<name>/ (each must
# pass), then new inputs for a bounded time. Any crash, sanitizer report, uncaught exception other
# than moe::Error, timeout (10 s per input) or allocation over 2 GiB fails the run; the input that
# caused it is saved under build-fuzz/findings/. New inputs go to build-fuzz/work/, never into the
# repository's corpus (copy a useful one there by hand). .ci/run calls this after tools/sanitize.sh.
# Usage: tools/fuzz.sh [SECONDS per target, default 60] [TARGET ...]   (TARGET: config,
#        safetensors, checkpoint_state, task_jsonl, corpus_jsonl; default all)
# One target by hand:  build-fuzz/tests/fuzz/fuzz_config -max_total_time=600 tests/fuzz/corpus/config
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(config safetensors checkpoint_state task_jsonl corpus_jsonl)
fi
BUILD=${MOE_FUZZ_BUILD:-build-fuzz}
JOBS=${MOE_JOBS:-$(nproc)}
GEN=()
if command -v ninja >/dev/null; then GEN=(-G Ninja); fi
mkdir -p "$BUILD"
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_CUDA=OFF -DMOE_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ > "$BUILD/configure.log" \
  || { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]/#/fuzz_}"

export MOE_FUZZ_TMP
MOE_FUZZ_TMP=$(mktemp -d)
trap 'rm -rf "$MOE_FUZZ_TMP"' EXIT
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$BUILD/findings"
failed=()
for name in "${TARGETS[@]}"; do
  exe="$BUILD/tests/fuzz/fuzz_$name"
  corpus="tests/fuzz/corpus/$name"
  [ -d "$corpus" ] && [ -n "$(ls -A "$corpus")" ] || { echo "fuzz: $corpus is empty" >&2; exit 1; }
  echo "== fuzz_$name: $(ls "$corpus" | wc -l) seed inputs, then ${SECONDS_PER} s of fuzzing"
  # 1. Every seed input, each run once (libFuzzer runs the files named on its command line).
  if ! "$exe" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$BUILD/findings/$name-" \
       "$corpus"/* > "$BUILD/findings/$name-seeds.log" 2>&1; then
    tail -40 "$BUILD/findings/$name-seeds.log"
    failed+=("$name (seed corpus)")
    continue
  fi
  # 2. Bounded fuzzing from the seeds; new inputs land in a scratch copy.
  work="$BUILD/work/$name"
  mkdir -p "$work"
  if ! "$exe" -max_total_time="$SECONDS_PER" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$BUILD/findings/$name-" "$work" "$corpus" \
       > "$BUILD/findings/$name-fuzz.log" 2>&1; then
    tail -60 "$BUILD/findings/$name-fuzz.log"
    failed+=("$name (fuzzing)")
    continue
  fi
  grep -E "stat::number_of_executed_units|stat::new_units_added" "$BUILD/findings/$name-fuzz.log" \
    | tr '\n' ' '
  echo
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs under $BUILD/findings/)" >&2
  exit 1
fi
echo "fuzz: all ${#TARGETS[@]} targets clean"
