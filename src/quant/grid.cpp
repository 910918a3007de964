#include <algorithm>
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

double storage_bits_per_weight(const QuantSettings& s, int64_t rows, int64_t cols) {
  const int64_t groups = s.group_size > 0 ? (cols + s.group_size - 1) / s.group_size : 1;
  const double per_grid = 16.0 + (s.sym ? 0.0 : s.bits);
  return static_cast<double>(s.bits) + per_grid * static_cast<double>(groups * rows) / static_cast<double>(rows * cols);
}

double proxy_loss(const float* w, const float* q, int64_t rows, int64_t cols, const double* h) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> d(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) d[j] = static_cast<double>(w[r * cols + j]) - q[r * cols + j];
    double acc = 0.0;
    for (int64_t i = 0; i < cols; ++i) {
      double hi = 0.0;
      for (int64_t j = 0; j < cols; ++j) hi += h[i * cols + j] * d[j];
      acc += d[i] * hi;
    }
    total += acc;
  }
  return total;
}

}  // namespace baq
