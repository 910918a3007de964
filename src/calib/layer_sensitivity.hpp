#pragma once
// How much one block linear's quantization error moves the model's output: the KL divergence of the
// next-token distributions when that linear alone runs quantized, against the original model, on a
// few calibration windows. Divided by the linear's GPTQ loss it is the exchange rate between layer
// losses that model-wide allocation needs (pooled proxy losses are in each layer's own units).
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "baq/model.hpp"
#include "baq/pack.hpp"

namespace baq {

// Mean KL(original ‖ linear i quantized) per position over the first windows of `calibration` holding
// at most `max_tokens` tokens (the first `max_tokens` of one window when a window is longer), for every
// block linear i in block order, `quantized[i]` its quantized form. The model runs unquantized
// otherwise and is left as it was found. `progress(done, total)` after each linear.
std::vector<double> layer_klds(Model& model, std::span<const int> calibration, int seqlen, int max_tokens,
                               const std::vector<std::shared_ptr<const PackedLinear>>& quantized,
                               const std::function<void(int, int)>& progress);

}  // namespace baq
