#!/usr/bin/env bash
# The test suite: a release build with every test (unit + real checkpoints in ../shared), then the
# unit tests (readers, tokenizers, malformed files) again under AddressSanitizer + UBSan, then the
# torch-checkpoint reader fuzzed with libFuzzer for a bounded time (BAQ_FUZZ_SECONDS, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
(cd build && ctest --output-on-failure -j2 --timeout 600)
scripts/build.sh build-asan -DBAQ_ASAN=ON -DBAQ_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest -L unit --output-on-failure -j2 --timeout 600)
scripts/fuzz.sh "${BAQ_FUZZ_SECONDS:-60}"
