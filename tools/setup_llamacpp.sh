#!/usr/bin/env bash
# Opt-in peer for the inference benchmark (tools/bench_infer_peers.sh): builds llama.cpp's
# llama-bench from the llama.cpp that the PyPI sdist of llama-cpp-python vendors, and keeps that
# tree's convert_hf_to_gguf.py and gguf-py for the GGUF conversion. Not part of tools/setup.sh or
# CI: the build compiles ggml + libllama (~10-20 min on 2 cores).
#
# Why not `pip install llama-cpp-python`: its wheel builds llama.cpp as a subproject with
# LLAMA_BUILD_TOOLS off, so llama-bench is not built (only libllama for the Python bindings).
# The sdist ships the whole llama.cpp source (tools/llama-bench, convert_hf_to_gguf.py, gguf-py),
# so we build the llama-bench and llama-batched-bench targets from it, standalone, CPU only.
#
# Needs tools/hf/venv (tools/setup_hf.sh: pip, torch, numpy, transformers for the converter).
# Usage: tools/setup_llamacpp.sh   (idempotent: kept when the same sdist was built)
# Result: tools/llamacpp/src (the sdist's vendor/llama.cpp), tools/llamacpp/build/bin/llama-bench
# (one sequence: pp, tg) and llama-batched-bench (B parallel sequences).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
DIR=tools/llamacpp                       # ignored by git
PY=tools/hf/venv/bin/python
STAMP="$DIR/.moe-llamacpp"
if [ -x "$DIR/build/bin/llama-bench" ] && [ -x "$DIR/build/bin/llama-batched-bench" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION $SHA256" ]; then
  echo "setup_llamacpp: $DIR up to date (llama-cpp-python $VERSION)"
  exit 0
fi
[ -x "$PY" ] || { echo "setup_llamacpp: $PY missing: run tools/setup_hf.sh first" >&2; exit 1; }
command -v cmake >/dev/null && command -v ninja >/dev/null || {
  echo "setup_llamacpp: cmake and ninja are needed (tools/setup.sh installs them)" >&2; exit 1; }
mkdir -p "$DIR/dl"
SDIST="$DIR/dl/llama_cpp_python-$VERSION.tar.gz"
if ! echo "$SHA256  $SDIST" | sha256sum -c --status 2>/dev/null; then
  rm -f "$SDIST"
  # --no-binary: the source distribution (the wheel does not carry llama-bench or the converter)
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$DIR/dl"
  echo "$SHA256  $SDIST" | sha256sum -c --status || {
    echo "setup_llamacpp: $SDIST: sha256 differs from the pinned $SHA256" >&2; exit 1; }
fi
rm -rf "$DIR/src" "$DIR/build" "$DIR/unpack"
mkdir -p "$DIR/unpack"
tar xzf "$SDIST" -C "$DIR/unpack"
mv "$DIR/unpack/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DIR/src"
rm -rf "$DIR/unpack"
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$DIR/src" -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${LAUNCHER[@]}" \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_BLAS=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > "$DIR/cmake.log"
nice cmake --build "$DIR/build" --target llama-bench llama-batched-bench -j"${JOBS:-$(nproc)}"
"$DIR/build/bin/llama-bench" --help > /dev/null
echo "$VERSION $SHA256" > "$STAMP"
echo "setup_llamacpp: built $DIR/build/bin/llama-bench and llama-batched-bench (llama.cpp of llama-cpp-python $VERSION)"
