#pragma once
// How much quantization moves the model's output: the KL divergence of the next-token distributions
// against the original model on a few calibration windows — for one block linear quantized alone
// (divided by the linear's GPTQ loss it is the exchange rate between layer losses that model-wide
// allocation needs: pooled proxy losses are in each layer's own units), or for the whole model as it
// runs now (to choose between whole allocations).
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "baq/model.hpp"
#include "baq/pack.hpp"

namespace baq {

// The original model's next-token log-probabilities on the first windows of `calibration` holding at
// most `max_tokens` tokens (the first `max_tokens` of one window when a window is longer).
struct OutputReference {
  std::vector<int> tokens;
  BatchShape shape;
  std::vector<float> log_probs;  // tokens × vocab
};
OutputReference output_reference(Model& model, std::span<const int> calibration, int seqlen, int max_tokens);

// Mean KL(original ‖ model as it runs now) per position on the reference's tokens.
double output_kld(Model& model, const OutputReference& reference);

// The same, for every block linear i in block order with `quantized[i]` alone in place (re-running the
// blocks from its own on cached inputs). The model runs unquantized otherwise and is left as it was
// found. `progress(done, total)` after each linear.
std::vector<double> layer_klds(Model& model, const OutputReference& reference,
                               const std::vector<std::shared_ptr<const PackedLinear>>& quantized,
                               const std::function<void(int, int)>& progress);

}  // namespace baq
