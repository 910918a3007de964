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
  m.ranges = s.ranges;
  m.super_groups = s.ranges == RangeKind::Scaled8 ? std::clamp(s.super_groups, 1, m.n_groups) : 1;  // at most one superblock of groups
  const int n_super = (m.n_groups + m.super_groups - 1) / m.super_groups;
  if (s.ranges == RangeKind::Scaled8) {
    m.super_lo.resize(static_cast<size_t>(rows * n_super));
    m.super_hi.resize(m.super_lo.size());
    m.qlo.resize(m.lo.size());
    m.qhi.resize(m.lo.size());
  }
  m.levels.assign(static_cast<size_t>(cols), 1 << s.bits);
  m.column_mean.assign(static_cast<size_t>(cols), 0.0f);
  m.group_of.resize(static_cast<size_t>(cols));
  m.column_loss.assign(static_cast<size_t>(cols), 0.0);
  for (int64_t j = 0; j < cols; ++j) m.group_of[j] = static_cast<int32_t>(j / gs);
  const int maxq = (1 << s.bits) - 1;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float super_lo = 0, super_hi = 0;
    for (int g = 0; g < m.n_groups; ++g) {
      const int64_t c0 = g * gs, c1 = std::min(cols, c0 + gs);
      if (s.ranges == RangeKind::Scaled8 && g % m.super_groups == 0) {
        const int64_t s1 = std::min(cols, c0 + gs * m.super_groups);
        const auto [smin, smax] = std::minmax_element(w + r * cols + c0, w + r * cols + s1);
        superblock_bounds(*smin, *smax, super_lo, super_hi);
        m.super_lo[r * n_super + g / m.super_groups] = super_lo;
        m.super_hi[r * n_super + g / m.super_groups] = super_hi;
      }
      const auto [lo, hi] = std::minmax_element(w + r * cols + c0, w + r * cols + c1);
      // Grid bounds as a packed file will hold them: quantize with exactly those.
      const StoredRange sr = store_range(s.ranges, *lo, *hi, super_lo, super_hi);
      const GridParams grid = fit_grid(sr.lo, sr.hi, maxq, s.sym);
      m.lo[r * m.n_groups + g] = sr.lo;
      m.hi[r * m.n_groups + g] = sr.hi;
      if (s.ranges == RangeKind::Scaled8) {
        m.qlo[r * m.n_groups + g] = sr.qlo;
        m.qhi[r * m.n_groups + g] = sr.qhi;
      }
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
