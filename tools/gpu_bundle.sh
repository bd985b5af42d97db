#!/usr/bin/env bash
# Builds moe-spec with the CUDA backend on this machine (no GPU needed) and bundles what the GPU
# machine needs into OUTDIR: the apps, the test executables (gpu and cpu; the cpu ones are dropped
# if the bundle would exceed its size budget), configs, the benchmark's PyTorch peer,
# tools/gpu_run.sh (as OUTDIR/run.sh), and every shared library the binaries need that a machine
# with only CUDA 13 lacks. Binaries and libraries are packed in OUTDIR/payload.tar.xz, which
# run.sh unpacks; OUTDIR/CONTENTS lists them.
#
# Usage: tools/gpu_bundle.sh OUTDIR [BUILD_DIR]
#   BUILD_DIR defaults to build-gpu-bundle (Release, -DMOE_CUDA=ON, sm_80 and sm_90, -Werror).
#   SKIP_BUILD=1: package BUILD_DIR as it is (it must be a -DMOE_CUDA=ON build).
#   ARCHS (default "80;90"), APPS (default "moetrain moeeval moeinfer moebench") and LIMIT_MIB
#   (default 64) make a leaner bundle when the repository itself takes part of the device call's
#   64 MiB: ARCHS=90 APPS=moebench halves the CUDA fat binaries for an H100/H200 alone.
#
# Libraries NOT bundled (the GPU machine provides them): the CUDA driver and toolkit libraries
# (libcuda, libcudart, libcublas, libcublasLt, libcudnn*, libnccl*, libnvrtc*, libnvJitLink) and
# glibc itself (ld-linux, libc, libm, libpthread, libdl, librt). libstdc++ and libgcc_s ARE
# bundled: the binaries need this compiler's GLIBCXX symbol versions, which an older system
# libstdc++ may lack. Binaries are stripped. The bundle (compressed) must stay under 64 MiB; the
# script fails if it does not.
set -euo pipefail

OUT=${1:?usage: tools/gpu_bundle.sh OUTDIR [BUILD_DIR]}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${2:-$SRC/build-gpu-bundle}
LIMIT_MIB=${LIMIT_MIB:-64}
ARCHS=${ARCHS:-80;90}
APPS=${APPS:-moetrain moeeval moeinfer moebench}
JOBS=${JOBS:-2}

if [ "${SKIP_BUILD:-0}" = 1 ]; then  # package an existing CUDA build as it is
  grep -q "MOE_CUDA:STRING=ON" "$BUILD/CMakeCache.txt" || {
    echo "gpu_bundle: $BUILD is not a -DMOE_CUDA=ON build" >&2; exit 1; }
else
  command -v nvcc >/dev/null || { echo "gpu_bundle: nvcc not found (install CUDA 13)" >&2; exit 1; }
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_CUDA=ON -DMOE_WERROR=ON \
    -DMOE_CUDNN=ON -DMOE_CUDA_ARCHS="$ARCHS" >/dev/null
  cmake --build "$BUILD" -j "$JOBS"
fi

rm -rf "$OUT"
STAGE="$OUT/.stage"
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/tests" "$OUT/tools"

strip_copy() {  # strip_copy SRC DEST_DIR
  cp "$1" "$2/"
  strip --strip-unneeded "$2/$(basename "$1")" 2>/dev/null || true
}

for app in $APPS; do
  [ -x "$BUILD/apps/$app" ] && strip_copy "$BUILD/apps/$app" "$STAGE/bin"
done
# The attention benchmark (tools/bench_attention.sh, which is copied to tools/ below).
[ -x "$BUILD/bench_attention" ] && strip_copy "$BUILD/bench_attention" "$STAGE/bin"
# Every test executable (gpu tests first in run.sh; the cpu ones too while the budget allows).
for t in "$BUILD"/tests/test_*; do
  [ -f "$t" ] && [ -x "$t" ] && strip_copy "$t" "$STAGE/tests"
done

# Shared libraries of everything staged that a CUDA-13-only machine lacks.
is_provided() {
  case "$1" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libcudnn*|libnccl*|libnvrtc*|libnvJitLink*) return 0 ;;
  esac
  return 1
}
for bin in "$STAGE"/bin/* "$STAGE"/tests/*; do
  [ -f "$bin" ] || continue
  while read -r name path; do
    is_provided "$name" && continue
    [ -f "$path" ] || { echo "gpu_bundle: $bin needs $name, which is not found" >&2; exit 1; }
    if [ ! -f "$STAGE/lib/$name" ]; then
      cp -L "$path" "$STAGE/lib/$name"
      strip --strip-unneeded "$STAGE/lib/$name" 2>/dev/null || true
    fi
  done < <(ldd "$bin" | awk '/=>/ { print $1, $3 }')
done

# Binaries and libraries travel as one xz archive (CUDA fat binaries and OpenBLAS compress 4-8x;
# uncompressed they would not fit 64 MiB). run.sh unpacks it on the GPU machine.
pack() { tar -C "$STAGE" -cf - bin tests lib | xz -T0 -6 > "$OUT/payload.tar.xz"; }
pack
size_mib() { du -sm --exclude=.stage "$OUT" | cut -f1; }
if [ "$(size_mib)" -gt $((LIMIT_MIB - 4)) ]; then
  echo "gpu_bundle: over budget with every test; keeping only the gpu tests"
  find "$STAGE/tests" -type f ! -name 'test_cuda_*' -delete
  pack
fi

[ -d "$SRC/configs" ] && cp -r "$SRC/configs" "$OUT/configs"
cp "$SRC/tools/gpu_run.sh" "$OUT/run.sh"
cp "$SRC/tools/bench_torch.py" "$OUT/tools/"
cp "$SRC/tools/bench_attention.sh" "$OUT/tools/"
git -C "$SRC" rev-parse HEAD > "$OUT/COMMIT" 2>/dev/null || echo unknown > "$OUT/COMMIT"
contents="$(ls "$STAGE/bin" | wc -l) apps, $(ls "$STAGE/tests" | wc -l) test executables, $(ls "$STAGE/lib" | wc -l) libraries"
( cd "$STAGE" && find bin tests lib -type f | sort ) > "$OUT/CONTENTS"
rm -rf "$STAGE"

total=$(size_mib)
echo "gpu_bundle: $OUT is ${total} MiB ($contents; unpacked by run.sh)"
if [ "$total" -ge "$LIMIT_MIB" ]; then
  echo "gpu_bundle: the bundle exceeds ${LIMIT_MIB} MiB" >&2
  exit 1
fi
