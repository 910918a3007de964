#!/usr/bin/env bash
# The packed .baq model against the F32 original, measured in the same run, each command in its own
# process so peak RSS is its own: size on disk, load time, perplexity tokens/s, generation tokens/s.
# Usage: bench/packed_vs_f32.sh [stories|kdoc] [bits]   (run from the repository root after a build)
set -euo pipefail
which=${1:-stories}
bits=${2:-4}
shared=../shared
baq=./build/baq
if [ "$which" = stories ]; then
  model=$shared/models/stories260K/stories260K.bin; tok="--tokenizer $shared/models/stories260K/tok512.bin"
  text=$shared/data/tinystories/val.txt; seqlen=512; prompt="Once upon a time"
else
  model=$shared/models/kdoc-6.8M/hf; tok=""; text=$shared/data/kdoc/val.txt; seqlen=256; prompt="The kernel"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
$baq quantize "$model" $tok --method baq --bits "$bits" --nsamples 32 --seqlen "$seqlen" --out "$out/m.baq" > /dev/null
row() {  # name, model path, extra flags, reference flags (for KLD)
  local ppl gen size kld
  size=$(du -b "$2" 2>/dev/null | tail -1 | cut -f1)
  ppl=$($baq ppl "$2" $3 --text "$text" --seqlen "$seqlen" --max-windows 32)
  kld=0
  if [ -n "${4:-}" ]; then  # its own process: the reference must not count in the packed model's RSS
    kld=$($baq ppl "$2" $3 --text "$text" --seqlen "$seqlen" --max-windows 32 $4 | sed -n 's/^kld mean \([0-9.]*\).*/\1/p')
  fi
  gen=$($baq generate "$2" $3 --prompt "$prompt" -n 48 --temp 0 2>&1 >/dev/null)
  printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n" "$1" "$size" \
    "$(echo "$gen" | sed -n 's/.*load \([0-9.]*\) s.*/\1/p')" \
    "$(echo "$ppl" | sed -n 's/^ppl \([0-9.]*\).*/\1/p')" \
    "$kld" \
    "$(echo "$ppl" | sed -n 's/^speed \([0-9]*\) tokens.*/\1/p')" \
    "$(echo "$gen" | sed -n 's/.*(\([0-9.]*\) tokens\/s).*/\1/p')" \
    "$(echo "$ppl" | sed -n 's/.*peak memory \([0-9.]*\) MiB/\1/p')"
}
echo "$which, BAQ at $bits bits (32 calibration windows), perplexity on the first 32 windows of $seqlen"
echo
echo "| model | bytes on disk | load s | ppl | KLD vs original | ppl tokens/s | generation tokens/s | ppl peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
row "original" "$model" "$tok"
row ".baq packed" "$out/m.baq" "" "--reference $model"
