#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds baq and runs it on the bundled default: stories260K
# from ../shared on TinyStories (the README's perplexity: 5.048164 under the windows protocol).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
shared=../shared
./build/baq info "$shared/models/stories260K/stories260K.bin" --tokenizer "$shared/models/stories260K/tok512.bin"
./build/baq ppl "$shared/models/stories260K/stories260K.bin" --tokenizer "$shared/models/stories260K/tok512.bin" \
  --text "$shared/data/tinystories/val.txt" --seqlen 512
