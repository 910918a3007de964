#include "calib/outlier_smoothing.hpp"

#include <algorithm>
#include <cmath>

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
  // At most 256 rows of each linear, evenly spaced: the proxy loss of a few hundred rows ranks the
  // candidates as all of them would, at a fraction of the cost.
  std::vector<std::vector<float>> sample(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t rows = weights[i]->rows(), step = std::max<int64_t>(1, (rows + 255) / 256);
    for (int64_t r = 0; r < rows; r += step) {
      sample[i].resize(sample[i].size() + static_cast<size_t>(cols));
      weights[i]->rows_to_f32(r, r + 1, sample[i].data() + sample[i].size() - static_cast<size_t>(cols));
    }
  }
  std::vector<double> hs(h.size());
  InputSmoothing best;
  double best_loss = 0.0;
  for (double alpha : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    std::vector<float> scale(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c)
      scale[static_cast<size_t>(c)] = static_cast<float>(std::exp(alpha * (std::log(rms[static_cast<size_t>(c)]) - log_mean)));
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j)
        hs[static_cast<size_t>(i * cols + j)] = h[static_cast<size_t>(i * cols + j)] / (static_cast<double>(scale[static_cast<size_t>(i)]) * scale[static_cast<size_t>(j)]);
    double loss = 0.0;
    for (const std::vector<float>& s : sample) {
      const int64_t n = static_cast<int64_t>(s.size()) / cols;
      std::vector<float> w = s;
      scale_columns(w.data(), n, cols, scale);
      const QuantizedMatrix q = quantize_rtn(w.data(), n, cols, settings);
      loss += proxy_loss(w.data(), q.dequant.data(), n, cols, hs.data());
    }
    if (alpha == 0.0 || loss < best_loss) {
      best_loss = loss;
      best = alpha == 0.0 ? InputSmoothing{} : InputSmoothing{alpha, std::move(scale)};
    }
  }
  return best;
}

}  // namespace baq
