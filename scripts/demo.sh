#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds baq and runs its main job on the bundled default,
# stories260K from ../shared: quantize it with BAQ to a packed .baq, evaluate perplexity and KL
# divergence against the original on TinyStories, generate from the .baq, and write the HTML report.
# Outputs land in build/demo/ (replaced atomically on every run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
shared=../shared
model="$shared/models/stories260K/stories260K.bin"
tok="$shared/models/stories260K/tok512.bin"
text="$shared/data/tinystories/val.txt"
mkdir -p build/demo
./build/baq info "$model" --tokenizer "$tok"
# BAQ at 4 stored bits per weight in the block linears, calibrated on TinyStories text.
./build/baq quantize "$model" --tokenizer "$tok" --method baq --bpw 4 --calib "$text" --nsamples 64 --seqlen 256 \
  --out build/demo/stories260K-baq4.baq
./build/baq info build/demo/stories260K-baq4.baq
# Perplexity of the .baq and its KL divergence from the original over the same windows.
./build/baq ppl build/demo/stories260K-baq4.baq --text "$text" --seqlen 512 --reference "$model"
./build/baq generate build/demo/stories260K-baq4.baq --prompt "Once upon a time" -n 96 --seed 1
./build/baq report build/demo/stories260K-baq4.report.json --html build/demo/report.html
echo "report: build/demo/report.html"
