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
