#include "calib/layer_sensitivity.hpp"

#include <algorithm>
#include <cmath>

#include "baq/error.hpp"

namespace baq {

namespace {

// Row-wise log-softmax in place (double sums: vocabularies of 10^5 entries).
void log_softmax_rows(float* z, int64_t rows, int64_t vocab) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = z + r * vocab;
    const float mx = *std::max_element(row, row + vocab);
    double sum = 0.0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
    const auto shift = static_cast<float>(static_cast<double>(mx) + std::log(sum));
    for (int64_t v = 0; v < vocab; ++v) row[v] -= shift;
  }
}

}  // namespace

std::vector<double> layer_klds(Model& model, std::span<const int> calibration, int seqlen, int max_tokens,
                               const std::vector<std::shared_ptr<const PackedLinear>>& quantized,
                               const std::function<void(int, int)>& progress) {
  const int64_t windows = static_cast<int64_t>(calibration.size()) / seqlen;
  if (windows < 1 || max_tokens < 2) fail("layer sensitivity: no calibration window to measure on");
  const int T = std::min(seqlen, max_tokens);
  const int nw = static_cast<int>(std::clamp<int64_t>(max_tokens / T, 1, windows));
  std::vector<int> tokens;
  for (int w = 0; w < nw; ++w)
    tokens.insert(tokens.end(), calibration.begin() + static_cast<std::ptrdiff_t>(w) * seqlen,
                  calibration.begin() + static_cast<std::ptrdiff_t>(w) * seqlen + T);
  const BatchShape shape{nw, T};
  const int64_t rows = static_cast<int64_t>(nw) * T, dim = model.config().dim, vocab = model.config().vocab_size;
  const int n_blocks = model.n_blocks();
  const auto area = static_cast<size_t>(rows * dim);

  // The original model's residual stream at every block's input (so a linear in block b re-runs
  // blocks b.. only) and its log-probabilities.
  std::vector<float> inputs(area * static_cast<size_t>(n_blocks + 1));
  model.embed(tokens, shape, inputs.data());
  for (int b = 0; b < n_blocks; ++b) {
    std::copy_n(inputs.data() + area * static_cast<size_t>(b), area, inputs.data() + area * static_cast<size_t>(b + 1));
    model.block(b).forward(inputs.data() + area * static_cast<size_t>(b + 1), shape, nullptr);
  }
  std::vector<float> x(area), reference(static_cast<size_t>(rows * vocab)), logits(reference.size());
  auto log_probs = [&](float* out) {
    model.final_norm(x.data(), rows);
    model.logits(x.data(), rows, out);
    log_softmax_rows(out, rows, vocab);
  };
  std::copy_n(inputs.data() + area * static_cast<size_t>(n_blocks), area, x.data());
  log_probs(reference.data());

  int total = 0;
  for (int b = 0; b < n_blocks; ++b) total += static_cast<int>(model.block(b).linears().size());
  if (quantized.size() != static_cast<size_t>(total)) fail("layer sensitivity: {} quantized linears for {}", quantized.size(), total);
  std::vector<double> kld, row_kl(static_cast<size_t>(rows));
  for (int b = 0; b < n_blocks; ++b)
    for (Linear* l : model.block(b).linears()) {
      const std::shared_ptr<const PackedLinear> original = l->packed;
      l->packed = quantized[kld.size()];
      std::copy_n(inputs.data() + area * static_cast<size_t>(b), area, x.data());
      for (int bb = b; bb < n_blocks; ++bb) model.block(bb).forward(x.data(), shape, nullptr);
      l->packed = original;
      log_probs(logits.data());
      // Per row in parallel, summed in row order: the same bits with any thread count.
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const float* p = reference.data() + r * vocab;
        const float* q = logits.data() + r * vocab;
        double kl = 0.0;
        for (int64_t v = 0; v < vocab; ++v) kl += std::exp(static_cast<double>(p[v])) * static_cast<double>(p[v] - q[v]);
        row_kl[static_cast<size_t>(r)] = kl;
      }
      double sum = 0.0;
      for (double v : row_kl) sum += v;
      kld.push_back(std::max(0.0, sum / static_cast<double>(rows)));
      if (progress) progress(static_cast<int>(kld.size()), total);
    }
  return kld;
}

}  // namespace baq
