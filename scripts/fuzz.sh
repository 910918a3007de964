#!/usr/bin/env bash
# Builds the fuzz targets with clang/libFuzzer (tests/fuzz) and fuzzes each from its committed seeds:
# the torch checkpoint reader for a third of $1 seconds (default 60), the readers of .baq,
# safetensors, config.json, tokenizer.json, GGUF and llama2.c files for the rest, shared evenly.
# The corpora grow in build-fuzz/; the repository is untouched. Exits non-zero on any crash,
# sanitizer report, leak or timeout (libFuzzer writes the input to build-fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cmake -S tests/fuzz -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz
readers=(baq safetensors config tokenizer gguf llama2c)
torch_seconds=$(( seconds / 3 > 1 ? seconds / 3 : 1 ))
reader_seconds=$(( (seconds - torch_seconds) / ${#readers[@]} > 1 ? (seconds - torch_seconds) / ${#readers[@]} : 1 ))
run() {  # target, seconds, corpus, dictionary (optional)
  local target=$1 secs=$2 corpus=$3 dict=${4:-}
  echo "== $target: ${secs} s"
  (cd build-fuzz && ./"$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
     ${dict:+-dict=$dict} -print_final_stats=1 "$corpus" 2>&1 | tail -n 4)
  # libFuzzer's exit status is lost in the pipe above: a finding leaves a crash-/leak-/timeout- file.
  if compgen -G "build-fuzz/crash-*" >/dev/null || compgen -G "build-fuzz/leak-*" >/dev/null ||
     compgen -G "build-fuzz/timeout-*" >/dev/null; then
    echo "fuzz finding in $target: see build-fuzz/" >&2
    exit 1
  fi
}
mkdir -p build-fuzz/corpus/torch_checkpoint
cp tests/fuzz/seeds/*.pkl tests/fuzz/seeds/*.zip build-fuzz/corpus/torch_checkpoint/
run fuzz_torch_checkpoint "$torch_seconds" corpus/torch_checkpoint ../tests/fuzz/pickle.dict
for r in "${readers[@]}"; do
  mkdir -p "build-fuzz/corpus/$r"
  cp tests/fuzz/seeds/"$r"/* "build-fuzz/corpus/$r/"
  run "fuzz_$r" "$reader_seconds" "corpus/$r"
done
