#include <algorithm>

#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/quant.hpp"

namespace baq {

QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSettings& s) {
  if (s.bits < 1 || s.bits > 8) fail("bits {} outside 1..8", s.bits);
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  const int64_t gs = s.group_size > 0 ? s.group_size : cols;
  m.n_groups = static_cast<int>((cols + gs - 1) / gs);  // a last partial group gets its own grid
  m.dequant.resize(static_cast<size_t>(rows * cols));
  m.codes.resize(m.dequant.size());
  m.sym = s.sym;
  m.lo.resize(static_cast<size_t>(rows * m.n_groups));
  m.hi.resize(m.lo.size());
  m.levels.assign(static_cast<size_t>(cols), 1 << s.bits);
  m.column_mean.assign(static_cast<size_t>(cols), 0.0f);
  m.group_of.resize(static_cast<size_t>(cols));
  m.column_loss.assign(static_cast<size_t>(cols), 0.0);
  for (int64_t j = 0; j < cols; ++j) m.group_of[j] = static_cast<int32_t>(j / gs);
  const int maxq = (1 << s.bits) - 1;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int g = 0; g < m.n_groups; ++g) {
      const int64_t c0 = g * gs, c1 = std::min(cols, c0 + gs);
      const auto [lo, hi] = std::minmax_element(w + r * cols + c0, w + r * cols + c1);
      // Grid bounds are stored as F16: quantize with exactly what a packed file will hold.
      const float lo16 = round_to_f16(*lo), hi16 = round_to_f16(*hi);
      const GridParams grid = fit_grid(lo16, hi16, maxq, s.sym);
      m.lo[r * m.n_groups + g] = lo16;
      m.hi[r * m.n_groups + g] = hi16;
      for (int64_t j = c0; j < c1; ++j) {
        const int c = grid.code(w[r * cols + j]);
        m.codes[r * cols + j] = static_cast<uint8_t>(c);
        m.dequant[r * cols + j] = grid.value(c);
      }
    }
  }
  return m;
}

}  // namespace baq
