#!/usr/bin/env bash
# Builds moe-spec with the CUDA backend on this machine (no GPU needed) and bundles what the GPU
# machine needs into OUTDIR: the apps, the gpu test executables (and the cpu ones while the
# bundle stays under its size budget), configs, the benchmark's PyTorch peer, tools/gpu_run.sh,
# and every shared library the binaries need that a machine with only CUDA 13 lacks.
#
# Usage: tools/gpu_bundle.sh OUTDIR [BUILD_DIR]
#   BUILD_DIR defaults to build-gpu-bundle (Release, -DMOE_CUDA=ON, sm_80 and sm_90, -Werror).
#
# Libraries NOT bundled (the GPU machine provides them): the CUDA driver and toolkit libraries
# (libcuda, libcudart, libcublas, libcublasLt, libcudnn*, libnccl*, libnvrtc*, libnvJitLink) and
# glibc itself (ld-linux, libc, libm, libpthread, libdl, librt). libstdc++ and libgcc_s ARE
# bundled: the binaries need this compiler's GLIBCXX symbol versions, which an older system
# libstdc++ may lack. Binaries are stripped. The bundle must stay under 64 MiB; the script fails
# if it does not.
set -euo pipefail

OUT=${1:?usage: tools/gpu_bundle.sh OUTDIR [BUILD_DIR]}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${2:-$SRC/build-gpu-bundle}
LIMIT_MIB=64
JOBS=${JOBS:-2}

command -v nvcc >/dev/null || { echo "gpu_bundle: nvcc not found (install CUDA 13)" >&2; exit 1; }
cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_CUDA=ON -DMOE_WERROR=ON \
  -DMOE_CUDA_ARCHS="80;90" >/dev/null
cmake --build "$BUILD" -j "$JOBS"

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/tests" "$OUT/tools"

strip_copy() {  # strip_copy SRC DEST_DIR
  cp "$1" "$2/"
  strip --strip-unneeded "$2/$(basename "$1")" 2>/dev/null || true
}
size_mib() { du -sm "$OUT" | cut -f1; }

for app in moetrain moeeval moeinfer moebench; do
  [ -x "$BUILD/apps/$app" ] && strip_copy "$BUILD/apps/$app" "$OUT/bin"
done
# gpu tests first (the reason for the bundle), then cpu tests while the budget allows.
for t in "$BUILD"/tests/test_cuda_*; do
  [ -x "$t" ] && strip_copy "$t" "$OUT/tests"
done

# Shared libraries of everything copied so far.
is_provided() {
  case "$1" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libcudnn*|libnccl*|libnvrtc*|libnvJitLink*) return 0 ;;
  esac
  return 1
}
collect_libs() {
  for bin in "$OUT"/bin/* "$OUT"/tests/*; do
    [ -f "$bin" ] || continue
    ldd "$bin" | awk '/=>/ { print $1, $3 }' | while read -r name path; do
      is_provided "$name" && continue
      [ -f "$path" ] || { echo "gpu_bundle: $bin needs $name, which is not found" >&2; exit 1; }
      [ -f "$OUT/lib/$name" ] || { cp -L "$path" "$OUT/lib/$name"; strip --strip-unneeded "$OUT/lib/$name" 2>/dev/null || true; }
    done
  done
}
collect_libs

# cpu tests, each only if the bundle stays within budget (leave 4 MiB headroom for outputs).
for t in "$BUILD"/tests/test_*; do
  case "$(basename "$t")" in test_cuda_*) continue ;; esac
  [ -x "$t" ] && [ -f "$t" ] || continue
  strip_copy "$t" "$OUT/tests"
  if [ "$(size_mib)" -gt $((LIMIT_MIB - 4)) ]; then
    rm "$OUT/tests/$(basename "$t")"
    echo "gpu_bundle: left out $(basename "$t") (size budget)"
  fi
done
collect_libs

[ -d "$SRC/configs" ] && cp -r "$SRC/configs" "$OUT/configs"
cp "$SRC/tools/gpu_run.sh" "$OUT/run.sh"
cp "$SRC/tools/bench_torch.py" "$OUT/tools/"
mkdir -p "$OUT/tools/reference"
cp "$SRC"/tools/reference/*.py "$OUT/tools/reference/" 2>/dev/null || true
git -C "$SRC" rev-parse HEAD > "$OUT/COMMIT" 2>/dev/null || echo unknown > "$OUT/COMMIT"

total=$(size_mib)
echo "gpu_bundle: $OUT is ${total} MiB ($(ls "$OUT/bin" | wc -l) apps, $(ls "$OUT/tests" | wc -l) tests, $(ls "$OUT/lib" | wc -l) libraries)"
if [ "$total" -ge "$LIMIT_MIB" ]; then
  echo "gpu_bundle: the bundle exceeds ${LIMIT_MIB} MiB" >&2
  exit 1
fi
