#!/usr/bin/env bash
# Runs the GPU tests (every tests/gpu/test_cuda_*.cpp but the cuDNN one: cuDNN is a closed library
# with no stand-in here) against kernels/*.cu on a
# machine WITHOUT a GPU, through the host emulator of tests/gpu/emu (emu_core.h says what it
# models and what it cannot). A check to run before spending device time, not a substitute for
# it: it catches index, bounds, barrier-divergence, cuBLASLt-layout and test-logic bugs.
#
# How: each kernels/*.cu is copied to BUILD_DIR/emu/src with its launches `k<<<cfg>>>(args)`
# rewritten to `emu::launch(emu::Cfg(cfg), ..., args)` and `extern __shared__` to the emulator's
# buffer, compiled as C++ with tests/gpu/emu first on the include path (standing in for the CUDA,
# cuBLAS, CUB and WMMA headers), and linked with BUILD_DIR's moe_core and test support in place of
# moe_cuda. Every CUDA thread is a fiber on one OS thread, so it is slow: the op tests take ~10
# minutes (attention at T = 1030 most of it), the whole-model one-step tests ~1 minute.
#
# Usage: tools/gpu_emulate.sh [BUILD_DIR] [-- GTEST_ARGS...]
#   BUILD_DIR: a configured and built -DMOE_CUDA=ON build (default build-cuda); its libmoe_core.a
#   calls the CUDA entry points, which the emulated kernels/ then provide.
#   GTEST_ARGS go to both test binaries; without them the 200-step training test (hours here) is
#   left out: --gtest_filter=-*TwoHundredSteps*
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build-cuda}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
GTEST_ARGS=("$@")
[ ${#GTEST_ARGS[@]} -eq 0 ] && GTEST_ARGS=(--gtest_filter=-*TwoHundredSteps*)
BUILD=$(cd "$BUILD" && pwd)
grep -q "MOE_CUDA:STRING=ON" "$BUILD/CMakeCache.txt" 2>/dev/null || {
  echo "gpu_emulate: $BUILD is not a -DMOE_CUDA=ON build" >&2; exit 2; }
for lib in lib/libmoe_core.a tests/libmoe_test_support.a; do
  [ -f "$BUILD/$lib" ] || { echo "gpu_emulate: build $BUILD first ($lib is missing)" >&2; exit 2; }
done

EMU="$BUILD/emu"
rm -rf "$EMU/src" && mkdir -p "$EMU/src" "$EMU/obj"
cp "$SRC"/kernels/*.cu "$SRC"/kernels/*.cuh "$SRC"/kernels/*.h "$EMU/src/"
python3 - "$EMU/src" <<'PY'
import glob, re, sys
launch = re.compile(r'([A-Za-z_][A-Za-z0-9_:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\(', re.S)
for path in glob.glob(sys.argv[1] + '/*'):
    text = open(path).read()
    text = text.replace('extern __shared__ float smem[];', 'float* smem = emu::dyn_smem<float>();')
    # A generic lambda lets template kernels deduce their arguments as they do at a launch.
    text = launch.sub(lambda m: 'emu::launch(emu::Cfg(%s), [](auto... emu_a) { %s(emu_a...); }, '
                      % (m.group(2), m.group(1)), text)
    open(path, 'w').write(text)
PY

# The library macros (fmt, spdlog) the project compiles with.
DEFS=$(sed -n 's/^ *DEFINES = //p' "$BUILD/build.ninja" | tr ' ' '\n' | grep -E '^-D(FMT|SPDLOG)_' |
       sort -u | tr '\n' ' ')
FLAGS=(-O1 -std=gnu++17 -fopenmp -Wno-unknown-pragmas -I"$SRC/tests/gpu/emu" -I"$EMU/src"
       -I"$SRC/lib" -I"$SRC/tests" $DEFS -DGTEST_HAS_PTHREAD=1)
echo "gpu_emulate: compiling kernels/ for the emulator"
pids=()
for f in "$EMU"/src/*.cu; do
  g++ "${FLAGS[@]}" -x c++ -c "$f" -o "$EMU/obj/$(basename "$f" .cu).o" & pids+=($!)
  if [ ${#pids[@]} -ge "${JOBS:-2}" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done

# The link line of the real test binary, with moe_cuda and the CUDA libraries left out.
LIBS=$(sed -n '/^build tests\/test_cuda_ops /,/^$/p' "$BUILD/build.ninja" | sed -n 's/^ *LINK_LIBRARIES = //p' |
       tr ' ' '\n' | grep -v -e libmoe_cuda -e '/cuda/' -e cudart -e cudadevrt -e '^-Wl,-rpath' | tr '\n' ' ')
status=0
for src in "$SRC"/tests/gpu/test_cuda_*.cpp; do
  t=$(basename "$src" .cpp)
  t=${t#test_cuda_}
  if [ "$t" = cudnn_attention ]; then
    # cuDNN is a closed library that runs only on a GPU: the emulator has no stand-in for it (the
    # kernels here are compiled without MOE_WITH_CUDNN), so the cuDNN path is not emulated.
    echo "gpu_emulate: test_cuda_cudnn_attention NOT RUN (cuDNN cannot run in the emulator)"
    continue
  fi
  echo "gpu_emulate: test_cuda_$t"
  # The project's warnings, as errors, on the tests (the kernels' C++ translation is not held to
  # them: its stand-in headers are not the real ones).
  g++ "${FLAGS[@]}" -Wall -Wextra -Wno-unused-parameter -Werror -DMOE_BINARY_DIR="\"$BUILD\"" \
    -DMOE_SOURCE_DIR="\"$SRC\"" -c "$SRC/tests/gpu/test_cuda_$t.cpp" -o "$EMU/test_cuda_$t.o"
  (cd "$BUILD" && g++ -fopenmp -o "$EMU/test_cuda_$t" "$EMU/test_cuda_$t.o" "$EMU"/obj/*.o $LIBS -lpthread)
  "$EMU/test_cuda_$t" "${GTEST_ARGS[@]}" || status=1
done
exit $status
