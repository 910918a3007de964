#include <cblas.h>

#include <algorithm>
#include <vector>
#include <cmath>

#include "baq/quant.hpp"

namespace baq {

GridParams fit_grid(float xmin, float xmax, int maxq, bool sym) {
  xmin = std::min(xmin, 0.0f);
  xmax = std::max(xmax, 0.0f);
  if (sym) {
    xmax = std::max(-xmin, xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin == 0.0f && xmax == 0.0f) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
  GridParams g;
  g.maxq = maxq;
  g.scale = (xmax - xmin) / static_cast<float>(maxq);
  g.zero = sym ? static_cast<float>((maxq + 1) / 2) : std::nearbyint(-xmin / g.scale);
  return g;
}

int GridParams::code(float x) const {
  const float c = std::nearbyint(x / scale) + zero;
  return static_cast<int>(std::clamp(c, 0.0f, static_cast<float>(maxq)));
}

GridParams QuantizedMatrix::grid(int64_t row, int64_t col) const {
  const size_t k = static_cast<size_t>(row * n_groups + group_of[static_cast<size_t>(col)]);
  return fit_grid(lo[k], hi[k], levels[static_cast<size_t>(col)] - 1, sym);
}

double proxy_loss(const float* w, const float* q, int64_t rows, int64_t cols, const double* h) {
  // Σ_r d_r H d_rᵀ with D = W − Q, as one dgemm (D·H) and an elementwise product.
  std::vector<double> d(static_cast<size_t>(rows * cols)), dh(d.size());
  for (int64_t i = 0; i < rows * cols; ++i) d[i] = static_cast<double>(w[i]) - q[i];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(cols), 1.0, d.data(), static_cast<int>(cols), h, static_cast<int>(cols), 0.0, dh.data(),
              static_cast<int>(cols));
  double total = 0.0;
  for (size_t i = 0; i < d.size(); ++i) total += d[i] * dh[i];
  return total;
}

}  // namespace baq
