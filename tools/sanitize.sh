#!/usr/bin/env bash
# Builds the CPU code with AddressSanitizer + UndefinedBehaviorSanitizer (CUDA off,
# RelWithDebInfo, in build-asan/) and runs every cpu-labelled test under it (the mpi-labelled ones
# in a second ctest call, with full allocation stacks). Any report fails the
# run: -fno-sanitize-recover=all turns each UBSan finding into an abort, and ASan halts on its
# first error (halt_on_error, abort_on_error). .ci/run calls this after tools/test.sh.
# Usage: tools/sanitize.sh [extra ctest arguments, e.g. -R Config]
# Environment: MOE_ASAN_BUILD (default build-asan), MOE_JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${MOE_ASAN_BUILD:-build-asan}
JOBS=${MOE_JOBS:-$(nproc)}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
GEN=()
if command -v ninja >/dev/null; then GEN=(-G Ninja); fi
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_CUDA=OFF -DMOE_WERROR=ON \
  -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" \
  -DCMAKE_EXE_LINKER_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN"
cmake --build "$BUILD" -j"$JOBS"
# detect_leaks: leaks fail too (tools/lsan.supp lists the third-party libraries' one-off
# allocations that live until exit, each with the reason).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=0:check_initialization_order=1:print_summary=1"
export LSAN_OPTIONS="suppressions=$PWD/tools/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1"
export OMP_WAIT_POLICY=PASSIVE
ctest --test-dir "$BUILD" -L cpu -LE mpi --output-on-failure -j"$JOBS" "$@"
# The multi-process tests: OpenMPI's one-off allocations are suppressed by library name
# (tools/lsan.supp), which needs the full allocation stacks (the fast unwinder stops at the first
# frame without a frame pointer, inside OpenMPI's plugins), and the plugins kept loaded so their
# frames have names.
ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0" OMPI_MCA_mca_base_component_disable_dlclose=1 \
  ctest --test-dir "$BUILD" -L mpi --output-on-failure -j"$JOBS" "$@"
