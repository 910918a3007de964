#pragma once
// Next-token sampling for generation: greedy at temperature 0, else softmax at `temperature`
// restricted to the smallest set of tokens whose probability reaches `top_p` (nucleus sampling).
#include <cstdint>
#include <random>

namespace baq {

int sample_token(const float* logits, int vocab, float temperature, float top_p, std::mt19937_64& rng);

}  // namespace baq
