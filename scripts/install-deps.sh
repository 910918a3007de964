#!/usr/bin/env bash
# Installs the Debian 12 packages baq builds and tests with (idempotent; needs root or sudo).
set -euo pipefail
packages=(
  g++ cmake ninja-build pkg-config
  libopenblas-openmp-dev liblapacke-dev    # OpenBLAS itself, OpenMP flavour (shares baq's threads) + LAPACKE
  libomp-dev nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev zlib1g-dev
  libsentencepiece-dev libicu-dev libgtest-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin                # mpirun -np N baq quantize (calibration and solves across ranks)
  chromium                                  # renders the HTML report in a test
  clang libclang-rt-14-dev                  # libFuzzer for the checkpoint-reader fuzz target
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
