#!/usr/bin/env bash
# Installs every dependency of moe-spec from Debian packages (run as root, or with sudo present).
# Usage: tools/setup.sh            (build dependencies, quickstart corpus, plotting; clang and
#                                   its libFuzzer runtime for tools/fuzz.sh)
#        tools/setup.sh --torch    (also PyTorch, for tools/reference and the benchmarks)
#        tools/setup.sh --hf       (--torch, then tools/setup_hf.sh: the venv tools/hf/venv with
#                                   pinned transformers and lm-eval from PyPI, for the Hugging
#                                   Face export/import and its tests; tools/test.sh runs this)
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
PKGS=(build-essential cmake ninja-build pkg-config git
      libcli11-dev libyaml-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
      libsentencepiece-dev sentencepiece libgtest-dev libgmock-dev libopenblas-dev libdnnl-dev libomp-dev libbz2-dev libcsv-dev
      openmpi-bin libopenmpi-dev libmetis-dev clang libclang-rt-dev
      fortunes fortunes-min curl ca-certificates python3 python3-numpy python3-yaml python3-matplotlib)
if [ "${1:-}" = "--torch" ] || [ "${1:-}" = "--hf" ]; then PKGS+=(python3-torch python3-venv); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages already installed"
fi
if [ "${1:-}" = "--hf" ]; then
  # Without PyPI (offline, or a TLS proxy whose CA pip does not trust) the rest of the project
  # still builds and tests: the hf-labelled tests then report skipped, with this reason.
  if ! bash "$(dirname "$0")/setup_hf.sh"; then
    echo "setup: warning: tools/hf/venv could not be created (see above); the hf-labelled tests" \
         "will report skipped. Rerun tools/setup_hf.sh once PyPI is reachable." >&2
  fi
fi

# cudnn-frontend: the header-only C++ graph API of cuDNN that the CUDA backend's fused attention
# (kernels/cudnn_attention.cpp) is written against. Debian does not package it; PyPI's
# nvidia-cudnn-frontend wheel ships the same headers (include/), so they are unpacked from there
# into third_party/cudnn_frontend (ignored by git). Only where the CUDA toolkit is installed.
CUDNN_FRONTEND_VERSION=1.32.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FE_DIR="$ROOT/third_party/cudnn_frontend"
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  if [ "$(cat "$FE_DIR/VERSION" 2>/dev/null)" != "$CUDNN_FRONTEND_VERSION" ]; then
    python3 -m pip --version >/dev/null 2>&1 || {
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip
    }
    fetch_cudnn_frontend() {
      local tmp
      tmp=$(mktemp -d)
      python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
        "nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION" || { rm -rf "$tmp"; return 1; }
      rm -rf "$FE_DIR"
      python3 - "$tmp" "$FE_DIR" <<'PY' || { rm -rf "$tmp" "$FE_DIR"; return 1; }
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "nvidia_cudnn_frontend-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("include/") and not n.endswith("/")]
    if not any(n == "include/cudnn_frontend.h" for n in names):
        sys.exit(f"setup: {wheel} has no include/cudnn_frontend.h")
    for n in names + [n for n in z.namelist() if n.endswith("LICENSE-MIT.txt")]:
        z.extract(n, sys.argv[2])
PY
      echo "$CUDNN_FRONTEND_VERSION" > "$FE_DIR/VERSION"
      rm -rf "$tmp"
    }
    # Without PyPI the rest still installs; a CUDA build then stops at configure with a message
    # naming this step (tools/build.sh asks for the cuDNN path whenever nvcc is present).
    if ! fetch_cudnn_frontend; then
      echo "setup: warning: the cudnn-frontend headers could not be fetched from PyPI; rerun" \
           "tools/setup.sh once PyPI is reachable (or configure with -DMOE_CUDNN=OFF)" >&2
    else
      echo "setup: cudnn-frontend $CUDNN_FRONTEND_VERSION headers in $FE_DIR/include"
    fi
  else
    echo "setup: cudnn-frontend $CUDNN_FRONTEND_VERSION headers already in $FE_DIR"
  fi
fi
