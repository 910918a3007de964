// The radix code layout (any level count per column, RowRadixLayout's mixed-radix words along a row,
// rows one after another in a bit stream):
// its row size, packing, and fused matvec for one token. Generation is a matrix-vector product, so
// every weight is decoded once per token and decoding speed is the whole cost: output rows are decoded four at a time
// in the 64-bit lanes of an AVX2 register (they share every column's level count and word layout),
// the digits extracted by multiplication (RowRadixLayout's fixed-point words) and each value dotted
// with x at once; no decoded weight is ever stored. Two such registers (eight rows) run side by side
// because each digit waits on the previous one's multiply: one chain alone leaves the core idle.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "baq/pack.hpp"
#include "pack/code_layouts.hpp"

namespace baq {

namespace {

constexpr int kLanes = 8;  // rows per tile: two registers of four 64-bit lanes

// value(row, j) = scale·(code − zero) for the column's grid: the decode of decode_rows, here for the
// rows of a tile. Tables interleave them: entry (grid, lane) at grid·kLanes + lane.
struct TileGrids {
  std::vector<float> scale, zero, row_scale, row_zero;
  void fit(const PackedLinear& p, int64_t r0) {
    const size_t n = static_cast<size_t>(p.n_groups) * p.distinct_levels.size();
    scale.resize(n * kLanes);
    zero.resize(n * kLanes);
    row_scale.resize(n);
    row_zero.resize(n);
    for (int lane = 0; lane < kLanes; ++lane) {
      fit_row_grids(p, std::min(r0 + lane, p.rows - 1), row_scale.data(), row_zero.data());
      for (size_t g = 0; g < n; ++g) {
        scale[g * kLanes + static_cast<size_t>(lane)] = row_scale[g];
        zero[g * kLanes + static_cast<size_t>(lane)] = row_zero[g];
      }
    }
  }
};

// y·L for four 64-bit lanes and L ≤ 256, from 32×32→64 products: with y = yh·2^32 + yl,
// a = yl·L and b = yh·L, the high word is (b + (a >> 32)) >> 32 and the low word a + (b << 32).
__attribute__((target("avx2,fma"))) inline __m256i mul_high_low(__m256i y, __m256i L, __m256i& low) {
  const __m256i a = _mm256_mul_epu32(y, L);
  const __m256i b = _mm256_mul_epu32(_mm256_srli_epi64(y, 32), L);
  low = _mm256_add_epi64(a, _mm256_slli_epi64(b, 32));
  return _mm256_srli_epi64(_mm256_add_epi64(b, _mm256_srli_epi64(a, 32)), 32);
}

__attribute__((target("avx2,fma,bmi2"))) void matvec_tiles_avx2(const float* x, const PackedLinear& p, int64_t t0, int64_t t1,
                                                                 float constant, float* out) {
  const std::vector<int64_t>& starts = p.layout.starts();
  const int64_t* field_at = p.layout.field_offsets().data();
  const int* field_bits = p.layout.field_bits().data();
  const int* levels = p.levels.data();
  const uint32_t* grid = p.grid_index.data();
  const int64_t words = p.layout.words_per_row();
  const uint8_t* stream = p.codes();
  const __m256i pick_low32 = _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0);
  TileGrids g;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t r0 = t * kLanes;
    g.fit(p, r0);
    const float* scale = g.scale.data();
    const float* zero = g.zero.data();
    // Where each lane's row starts in the bit stream (rows are bit-granular).
    int64_t row[kLanes];
    for (int lane = 0; lane < kLanes; ++lane) row[lane] = std::min(r0 + lane, p.rows - 1) * p.row_bits;
    __m128 acc0 = _mm_setzero_ps(), acc1 = _mm_setzero_ps();
    for (int64_t w = 0; w < words; ++w) {
      const int64_t at = field_at[w];
      const int b = field_bits[w];
      const auto f = [&](int lane) { return static_cast<long long>(radix_field(stream, row[lane] + at, b)); };
      __m256i y0 = _mm256_setr_epi64x(f(0), f(1), f(2), f(3));
      __m256i y1 = _mm256_setr_epi64x(f(4), f(5), f(6), f(7));
      for (int64_t j = starts[static_cast<size_t>(w)]; j < starts[static_cast<size_t>(w) + 1]; ++j) {
        if (levels[j] == 1) continue;  // one-level columns are in `constant`; multiplying by 1 keeps y
        const __m256i L = _mm256_set1_epi64x(levels[j]);
        __m256i low0, low1;
        const __m256i c0 = mul_high_low(y0, L, low0);
        const __m256i c1 = mul_high_low(y1, L, low1);
        y0 = low0;
        y1 = low1;
        const __m128 code0 = _mm_cvtepi32_ps(_mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c0, pick_low32)));
        const __m128 code1 = _mm_cvtepi32_ps(_mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c1, pick_low32)));
        const size_t at = static_cast<size_t>(grid[j]) * kLanes;
        const __m128 xj = _mm_set1_ps(x[j]);
        acc0 = _mm_fmadd_ps(_mm_mul_ps(_mm_loadu_ps(scale + at), _mm_sub_ps(code0, _mm_loadu_ps(zero + at))), xj, acc0);
        acc1 = _mm_fmadd_ps(_mm_mul_ps(_mm_loadu_ps(scale + at + 4), _mm_sub_ps(code1, _mm_loadu_ps(zero + at + 4))), xj, acc1);
      }
    }
    alignas(16) float sums[kLanes];
    _mm_store_ps(sums, acc0);
    _mm_store_ps(sums + 4, acc1);
    for (int lane = 0; lane < kLanes && r0 + lane < p.rows; ++lane) out[r0 + lane] = sums[lane] + constant;
  }
}

}  // namespace

bool radix_accepts(const std::vector<int>&, bool) { return true; }

int64_t radix_row_bits(const PackedLinear& p) { return p.layout.row_bits(); }

void radix_pack_row(PackedLinear& p, int64_t r, const uint8_t* codes) {
  std::vector<uint64_t> words(static_cast<size_t>(p.layout.words_per_row()));
  p.layout.pack_row(codes, words.data());
  p.layout.store_row(words.data(), p.codes(), r * p.row_bits);
}

void radix_unpack_row(const PackedLinear& p, int64_t r, uint8_t* codes) {
  std::vector<uint64_t> words(static_cast<size_t>(p.layout.words_per_row()));
  p.layout.load_row(p.codes(), r * p.row_bits, words.data());
  p.layout.unpack_row(words.data(), codes);
}

void radix_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  if (!cpu_has_avx2() || r0 % kLanes != 0 || (r1 % kLanes != 0 && r1 != p.rows)) {
    std::vector<float> w(static_cast<size_t>(p.cols));
    for (int64_t r = r0; r < r1; ++r) {
      decode_rows(p, r, r + 1, w.data());
      float s = 0.0f;
      for (int64_t j = 0; j < p.cols; ++j) s += w[static_cast<size_t>(j)] * x[j];
      out[r] = s;
    }
    return;
  }
  // One-level columns hold the same value in every row: their share of every output is one sum.
  float constant = 0.0f;
  for (int64_t j = 0; j < p.cols; ++j)
    if (p.one_level[static_cast<size_t>(j)]) constant += p.column_value[static_cast<size_t>(j)] * x[j];
  matvec_tiles_avx2(x, p, r0 / kLanes, (r1 + kLanes - 1) / kLanes, constant, out);
}

}  // namespace baq
