#include <cblas.h>

#include <algorithm>

#include "baq/half.hpp"
#include "baq/pack.hpp"

namespace baq {

namespace {

// Per-column scale, zero and value of one row, from the row's grids fitted once per (group, level count).
struct RowGrids {
  std::vector<GridParams> table;  // n_groups × distinct levels
  std::vector<float> scale, zero;
  std::vector<uint8_t> codes;
};

void fit_row(const PackedLinear& p, int64_t r, RowGrids& g) {
  const size_t nd = p.distinct_levels.size();
  g.table.resize(static_cast<size_t>(p.n_groups) * nd);
  for (int64_t k = 0; k < p.n_groups; ++k) {
    const size_t at = static_cast<size_t>(r * p.n_groups + k);
    const float lo = f16_to_f32(p.lo[at]), hi = f16_to_f32(p.hi[at]);
    for (size_t d = 0; d < nd; ++d)
      g.table[static_cast<size_t>(k) * nd + d] = p.distinct_levels[d] > 1 ? fit_grid(lo, hi, p.distinct_levels[d] - 1, p.sym) : GridParams{0.0f, 0.0f, 0};
  }
  g.scale.resize(static_cast<size_t>(p.cols));
  g.zero.resize(g.scale.size());
  for (int64_t j = 0; j < p.cols; ++j) {
    const GridParams& grid = g.table[static_cast<size_t>(p.group(j)) * nd + p.level_index[static_cast<size_t>(j)]];
    g.scale[static_cast<size_t>(j)] = grid.scale;
    g.zero[static_cast<size_t>(j)] = grid.zero;
  }
  g.codes.resize(static_cast<size_t>(p.cols));
  p.layout.unpack_row(p.codes.data() + r * p.layout.words_per_row(), g.codes.data());
}

// value = scale·(code − zero), or the stored value of a one-level column: the same two IEEE
// operations as GridParams::value, so every instruction set gives the same bits.
inline void values_generic(const uint8_t* codes, const float* scale, const float* zero, const float* fixed,
                           const std::vector<int>& levels, int64_t n, float* out) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = scale[j] * (static_cast<float>(codes[j]) - zero[j]);
    out[j] = levels[static_cast<size_t>(j)] > 1 ? v : fixed[j];
  }
}

__attribute__((target("avx2"))) void values_avx2(const uint8_t* codes, const float* scale, const float* zero,
                                                 const float* fixed, const std::vector<int>& levels, int64_t n,
                                                 float* out) {
  values_generic(codes, scale, zero, fixed, levels, n, out);  // compiled again for AVX2: vectorized
}

template <bool kAvx2>
void decode(const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  RowGrids g;
  for (int64_t r = r0; r < r1; ++r) {
    fit_row(p, r, g);
    float* row = out + (r - r0) * p.cols;
    if constexpr (kAvx2)
      values_avx2(g.codes.data(), g.scale.data(), g.zero.data(), p.column_value.data(), p.levels, p.cols, row);
    else
      values_generic(g.codes.data(), g.scale.data(), g.zero.data(), p.column_value.data(), p.levels, p.cols, row);
  }
}

}  // namespace

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

void decode_rows_scalar(const PackedLinear& p, int64_t r0, int64_t r1, float* out) { decode<false>(p, r0, r1, out); }
void decode_rows_avx2(const PackedLinear& p, int64_t r0, int64_t r1, float* out) { decode<true>(p, r0, r1, out); }

void decode_rows(const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  if (cpu_has_avx2())
    decode_rows_avx2(p, r0, r1, out);
  else
    decode_rows_scalar(p, r0, r1, out);
}

void packed_matmul(const float* x, int64_t rows_x, const PackedLinear& p, float* out) {
  constexpr int64_t kTile = 64;
  const int64_t tiles = (p.rows + kTile - 1) / kTile;
  // Tiles run on the OpenMP threads, each decoding into its own buffer; BLAS stays single-threaded.
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel
  {
    std::vector<float> w(static_cast<size_t>(kTile * p.cols));
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kTile, r1 = std::min(p.rows, r0 + kTile);
      decode_rows(p, r0, r1, w.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows_x), static_cast<int>(r1 - r0),
                  static_cast<int>(p.cols), 1.0f, x, static_cast<int>(p.cols), w.data(), static_cast<int>(p.cols), 0.0f,
                  out + r0, static_cast<int>(p.rows));
    }
  }
  openblas_set_num_threads(blas_threads);
}

}  // namespace baq
