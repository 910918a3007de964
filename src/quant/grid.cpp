#include <cblas.h>

#include <algorithm>
#include <numeric>
#include <vector>
#include <cmath>

#include "baq/error.hpp"
#include "baq/half.hpp"
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

const char* range_kind_name(RangeKind kind) { return kind == RangeKind::F16 ? "f16" : "scaled8"; }

RangeKind parse_range_kind(const std::string& name) {
  if (name == "f16") return RangeKind::F16;
  if (name == "scaled8") return RangeKind::Scaled8;
  fail("unknown range storage '{}' (f16 or scaled8)", name);
}

void superblock_bounds(float xmin, float xmax, float& super_lo, float& super_hi) {
  super_lo = round_to_f16(std::min(xmin, 0.0f));
  super_hi = round_to_f16(std::max(xmax, 0.0f));
}

StoredRange store_range(RangeKind kind, float lo, float hi, float super_lo, float super_hi) {
  StoredRange r;
  if (kind == RangeKind::F16) {
    r.lo = round_to_f16(lo);
    r.hi = round_to_f16(hi);
    return r;
  }
  // Fractions of the superblock's bounds, nearest of 255 steps; a group range wider than the
  // superblock's (its columns moved since the superblock was measured) is clipped to it.
  auto fraction = [](float v, float super) -> uint8_t {
    if (!(super != 0.0f)) return 0;
    const float f = std::clamp(v / super, 0.0f, 1.0f);
    return static_cast<uint8_t>(std::lround(f * 255.0f));
  };
  r.qlo = fraction(std::min(lo, 0.0f), super_lo);
  r.qhi = fraction(std::max(hi, 0.0f), super_hi);
  r.lo = scaled8_value(super_lo, r.qlo);
  r.hi = scaled8_value(super_hi, r.qhi);
  return r;
}

GridParams QuantizedMatrix::grid(int64_t row, int64_t col) const {
  const size_t k = static_cast<size_t>(row * n_groups + group_of[static_cast<size_t>(col)]);
  return fit_grid(lo[k], hi[k], levels[static_cast<size_t>(col)] - 1, sym);
}

void row_quadratic_forms(int64_t rows, int64_t cols, const double* h,
                         const std::function<void(int64_t r0, int64_t r1, float* dst)>& d_rows, double* per_row) {
  // d_r H d_rᵀ in F32 products (sgemm) summed in double: H a block of 512 columns at a time in F32
  // (converted once per call, never a second whole copy of it), D a block of 256 rows at a time.
  constexpr int64_t kCols = 512, kRows = 256;
  std::vector<float> hb(static_cast<size_t>(cols * std::min(cols, kCols)));
  std::vector<float> d(static_cast<size_t>(std::min(rows, kRows) * cols)), dh(static_cast<size_t>(std::min(rows, kRows) * std::min(cols, kCols)));
  std::fill(per_row, per_row + rows, 0.0);
  for (int64_t c0 = 0; c0 < cols; c0 += kCols) {
    const int64_t nc = std::min(kCols, cols - c0);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < nc; ++j) hb[i * nc + j] = static_cast<float>(h[i * cols + c0 + j]);
    for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
      const int64_t nr = std::min(kRows, rows - r0);
      d_rows(r0, r0 + nr, d.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nr), static_cast<int>(nc),
                  static_cast<int>(cols), 1.0f, d.data(), static_cast<int>(cols), hb.data(), static_cast<int>(nc), 0.0f,
                  dh.data(), static_cast<int>(nc));
      // Each row's sum in column order: the same for any thread count.
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < nr; ++r) {
        double row = 0.0;
        for (int64_t j = 0; j < nc; ++j) row += static_cast<double>(d[r * cols + c0 + j]) * dh[r * nc + j];
        per_row[r0 + r] += row;
      }
    }
  }
}

double proxy_loss(const float* w, const float* q, int64_t rows, int64_t cols, const double* h) {
  std::vector<double> per_row(static_cast<size_t>(rows));
  row_quadratic_forms(rows, cols, h, [&](int64_t r0, int64_t r1, float* d) {
    for (int64_t i = 0; i < (r1 - r0) * cols; ++i) d[i] = w[r0 * cols + i] - q[r0 * cols + i];
  }, per_row.data());
  return std::accumulate(per_row.begin(), per_row.end(), 0.0);  // rows in order
}

double proxy_loss(const float* w, const QuantizedMatrix& q, const double* h) {
  return q.proxy_loss >= 0 ? q.proxy_loss : proxy_loss(w, q.dequant.data(), q.rows, q.cols, h);
}

}  // namespace baq
