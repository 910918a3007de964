#include "calib/layer_sensitivity.hpp"

#include <algorithm>
#include <cmath>

#include "baq/calibrate.hpp"
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

// The final norm, head and log-softmax of the last block's output `x` (overwritten) into `out`.
void log_probs_of(Model& model, float* x, int64_t rows, float* out) {
  model.final_norm(x, rows);
  model.logits(x, rows, out);
  log_softmax_rows(out, rows, model.config().vocab_size);
}

// Mean over positions of KL(p ‖ q), per row in parallel and summed in row order: the same bits with
// any thread count.
double mean_kl(const std::vector<float>& p_log, const std::vector<float>& q_log, int64_t rows, int64_t vocab) {
  std::vector<double> row_kl(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = p_log.data() + r * vocab;
    const float* q = q_log.data() + r * vocab;
    double kl = 0.0;
    for (int64_t v = 0; v < vocab; ++v) kl += std::exp(static_cast<double>(p[v])) * static_cast<double>(p[v] - q[v]);
    row_kl[static_cast<size_t>(r)] = kl;
  }
  double sum = 0.0;
  for (double v : row_kl) sum += v;
  return std::max(0.0, sum / static_cast<double>(rows));
}

// The residual stream of the reference's tokens after `blocks` blocks of the model as it runs now.
std::vector<float> residual_after(Model& model, const OutputReference& ref, int blocks) {
  std::vector<float> x(ref.tokens.size() * static_cast<size_t>(model.config().dim));
  model.embed(ref.tokens, ref.shape, x.data());
  for (int b = 0; b < blocks; ++b) model.block(b).forward(x.data(), ref.shape, nullptr);
  return x;
}

}  // namespace

OutputReference output_reference(Model& model, std::span<const int> calibration, int seqlen, int max_tokens) {
  const int64_t windows = static_cast<int64_t>(calibration.size()) / seqlen;
  if (windows < 1 || max_tokens < 2) fail("output divergence: no calibration window to measure on");
  const int T = std::min(seqlen, max_tokens);
  const int nw = static_cast<int>(std::clamp<int64_t>(max_tokens / T, 1, windows));
  OutputReference ref;
  for (int w = 0; w < nw; ++w)
    ref.tokens.insert(ref.tokens.end(), calibration.begin() + static_cast<std::ptrdiff_t>(w) * seqlen,
                      calibration.begin() + static_cast<std::ptrdiff_t>(w) * seqlen + T);
  ref.shape = BatchShape{nw, T};
  const auto rows = static_cast<int64_t>(ref.tokens.size());
  std::vector<float> x = residual_after(model, ref, model.n_blocks());
  ref.log_probs.resize(static_cast<size_t>(rows * model.config().vocab_size));
  log_probs_of(model, x.data(), rows, ref.log_probs.data());
  return ref;
}

int model_wide_check_tokens(int sensitivity_tokens, int64_t vocab) {
  const int64_t cap = (int64_t{256} << 20) / (4 * std::max<int64_t>(vocab, 1));
  return static_cast<int>(std::max<int64_t>(sensitivity_tokens, std::min<int64_t>(4 * int64_t{sensitivity_tokens}, cap)));
}

double output_kld(Model& model, const OutputReference& ref) {
  const auto rows = static_cast<int64_t>(ref.tokens.size());
  std::vector<float> x = residual_after(model, ref, model.n_blocks()), lp(ref.log_probs.size());
  log_probs_of(model, x.data(), rows, lp.data());
  return mean_kl(ref.log_probs, lp, rows, model.config().vocab_size);
}

std::vector<double> layer_klds(Model& model, const OutputReference& ref,
                               const std::vector<std::shared_ptr<const PackedLinear>>& quantized,
                               const std::function<void(int, int)>& progress) {
  const auto rows = static_cast<int64_t>(ref.tokens.size());
  const int64_t dim = model.config().dim, vocab = model.config().vocab_size;
  const int n_blocks = model.n_blocks();
  const auto area = static_cast<size_t>(rows * dim);
  int total = 0;
  for (int b = 0; b < n_blocks; ++b) total += static_cast<int>(model.block(b).linears().size());
  if (quantized.size() != static_cast<size_t>(total)) fail("layer sensitivity: {} quantized linears for {}", quantized.size(), total);

  // The original model's residual stream at every block's input, so a linear in block b re-runs
  // blocks b.. only.
  std::vector<float> inputs(area * static_cast<size_t>(n_blocks));
  {
    std::vector<float> x = residual_after(model, ref, 0);
    for (int b = 0; b < n_blocks; ++b) {
      std::copy_n(x.data(), area, inputs.data() + area * static_cast<size_t>(b));
      model.block(b).forward(x.data(), ref.shape, nullptr);
    }
  }
  std::vector<float> x(area), logits(ref.log_probs.size());
  std::vector<double> kld;
  for (int b = 0; b < n_blocks; ++b)
    for (Linear* l : model.block(b).linears()) {
      const std::shared_ptr<const PackedLinear> original = l->packed;
      l->packed = quantized[kld.size()];
      std::copy_n(inputs.data() + area * static_cast<size_t>(b), area, x.data());
      for (int bb = b; bb < n_blocks; ++bb) model.block(bb).forward(x.data(), ref.shape, nullptr);
      l->packed = original;
      log_probs_of(model, x.data(), rows, logits.data());
      kld.push_back(mean_kl(ref.log_probs, logits, rows, vocab));
      if (progress) progress(static_cast<int>(kld.size()), total);
    }
  return kld;
}

}  // namespace baq
