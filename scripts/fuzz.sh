#!/usr/bin/env bash
# Builds the torch-checkpoint fuzz target with clang/libFuzzer and fuzzes it for $1 seconds (default
# 60) from the committed seeds; the corpus it grows stays in build-fuzz/, the repository is untouched.
# Exits non-zero on any crash, sanitizer report or leak (libFuzzer writes the input to build-fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cmake -S tests/fuzz -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz
mkdir -p build-fuzz/corpus
cp tests/fuzz/seeds/* build-fuzz/corpus/
cd build-fuzz
./fuzz_torch_checkpoint -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -dict=../tests/fuzz/pickle.dict -print_final_stats=1 corpus 2>&1 | tail -n 25
