#include "calib/outlier_smoothing.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <numeric>

namespace baq {

void scale_columns(float* w, int64_t rows, int64_t cols, std::span<const float> scale) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) w[r * cols + j] *= scale[static_cast<size_t>(j)];
}

InputSmoothing choose_input_smoothing(const std::vector<const Tensor*>& weights, const std::vector<double>& h,
                                      const QuantSettings& settings) {
  if (weights.empty()) return {};
  const int64_t cols = weights.front()->cols();
  // Channel magnitudes: rms_c = sqrt(H_cc/2); a dead channel is held at a millionth of the largest.
  std::vector<double> rms(static_cast<size_t>(cols));
  double top = 0.0;
  for (int64_t c = 0; c < cols; ++c) top = std::max(top, rms[static_cast<size_t>(c)] = std::sqrt(std::max(0.0, h[c * cols + c] / 2)));
  if (!(top > 0.0)) return {};
  double log_mean = 0.0;
  for (double& v : rms) log_mean += std::log(v = std::max(v, 1e-6 * top));
  log_mean /= static_cast<double>(cols);
  // At most 256 rows of each linear (128 on inputs wider than 1024), evenly spaced: the proxy loss of a
  // few hundred rows ranks the candidates as all of them would, at a fraction of the cost — which is
  // still 10·rows·n² for the five candidates, more than GPTQ's own updates of a 2048-row linear at 256.
  const int64_t max_rows = cols > 1024 ? 128 : 256;
  std::vector<std::vector<float>> sample(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t rows = weights[i]->rows(), step = std::max<int64_t>(1, (rows + max_rows - 1) / max_rows);
    for (int64_t r = 0; r < rows; r += step) {
      sample[i].resize(sample[i].size() + static_cast<size_t>(cols));
      weights[i]->rows_to_f32(r, r + 1, sample[i].data() + sample[i].size() - static_cast<size_t>(cols));
    }
  }
  // Each candidate's proxy loss under its scaled Hessian D⁻¹HD⁻¹ (D = diag(scale)) of the scaled
  // weights' error W·D − Q equals the loss under H of W − Q·D⁻¹: every candidate's sampled rows go into
  // one matrix of errors and one pass over H gives them all.
  constexpr double kAlphas[] = {0.0, 0.25, 0.5, 0.75, 1.0};
  constexpr size_t kCandidates = std::size(kAlphas);
  int64_t sample_rows = 0;
  for (const std::vector<float>& s : sample) sample_rows += static_cast<int64_t>(s.size()) / cols;
  std::vector<std::vector<float>> scales(kCandidates, std::vector<float>(static_cast<size_t>(cols)));
  std::vector<float> errors(static_cast<size_t>(kCandidates * static_cast<size_t>(sample_rows * cols)));
  for (size_t k = 0; k < kCandidates; ++k) {
    std::vector<float>& scale = scales[k];
    for (int64_t c = 0; c < cols; ++c)
      scale[static_cast<size_t>(c)] = static_cast<float>(std::exp(kAlphas[k] * (std::log(rms[static_cast<size_t>(c)]) - log_mean)));
    float* e = errors.data() + k * static_cast<size_t>(sample_rows * cols);
    for (const std::vector<float>& s : sample) {
      const int64_t n = static_cast<int64_t>(s.size()) / cols;
      std::vector<float> w = s;
      scale_columns(w.data(), n, cols, scale);
      const QuantizedMatrix q = quantize_rtn(w.data(), n, cols, settings);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < cols; ++c)
          e[r * cols + c] = s[static_cast<size_t>(r * cols + c)] - q.dequant[static_cast<size_t>(r * cols + c)] / scale[static_cast<size_t>(c)];
      e += n * cols;
    }
  }
  const int64_t total_rows = static_cast<int64_t>(kCandidates) * sample_rows;
  std::vector<double> per_row(static_cast<size_t>(total_rows));
  row_quadratic_forms(total_rows, cols, h.data(), [&](int64_t r0, int64_t r1, float* dst) {
    std::copy(errors.data() + r0 * cols, errors.data() + r1 * cols, dst);
  }, per_row.data());
  InputSmoothing best;
  double best_loss = 0.0;
  for (size_t k = 0; k < kCandidates; ++k) {
    const auto first = per_row.begin() + static_cast<int64_t>(k) * sample_rows;
    const double loss = std::accumulate(first, first + sample_rows, 0.0);
    if (k == 0 || loss < best_loss) {
      best_loss = loss;
      best = kAlphas[k] == 0.0 ? InputSmoothing{} : InputSmoothing{kAlphas[k], scales[k]};
    }
  }
  return best;
}

}  // namespace baq
