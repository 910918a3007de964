// The radix code layout (any level count per column, RowRadixLayout's mixed-radix words along a row,
// rows one after another in a bit stream): its row size, packing, and fused matvec for one token.
// Generation is a matrix-vector product, so every weight is decoded once per token and decoding speed
// is the whole cost: rows are decoded side by side in SIMD lanes (they share every column's level
// count and word layout), the digits extracted by multiplication (RowRadixLayout's fixed-point words,
// each 64-bit word as two 32-bit halves, which AVX2's 32×32→64 multiplier serves in one step each)
// and each value dotted with x at once; no decoded weight is ever stored.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "baq/pack.hpp"
#include "pack/code_layouts.hpp"

namespace baq {

namespace {

constexpr int kLanes = 8;  // rows per tile: one register of eight 32-bit lanes

// value(row, j) = scale·(code − zero) for the column's grid: the decode of decode_rows, here for the
// `lanes` rows from r0 (one or two tiles). Tables interleave them: entry (grid, row) at grid·lanes + row.
struct TileGrids {
  std::vector<float> scale, zero, row_scale, row_zero;
  void fit(const PackedLinear& p, int64_t r0, int lanes) {
    const size_t n = static_cast<size_t>(p.n_groups) * p.distinct_levels.size();
    scale.resize(n * static_cast<size_t>(lanes));
    zero.resize(n * static_cast<size_t>(lanes));
    row_scale.resize(n);
    row_zero.resize(n);
    const bool prepared = !p.row_scale.empty();  // fitted at load (PackedLinear::prepare): read in place
    for (int lane = 0; lane < lanes; ++lane) {
      const int64_t r = std::min(r0 + lane, p.rows - 1);
      if (!prepared) fit_row_grids(p, r, row_scale.data(), row_zero.data());
      const float* rs = prepared ? p.row_scale.data() + static_cast<size_t>(r) * n : row_scale.data();
      const uint8_t* rz8 = prepared ? p.row_zero.data() + static_cast<size_t>(r) * n : nullptr;
      for (size_t g = 0; g < n; ++g) {
        scale[g * static_cast<size_t>(lanes) + static_cast<size_t>(lane)] = rs[g];
        zero[g * static_cast<size_t>(lanes) + static_cast<size_t>(lane)] = prepared ? static_cast<float>(rz8[g]) : row_zero[g];
      }
    }
  }
};

// radix_field for four lanes at once: two gathers of the 8 bytes from each field's first byte and the
// next 8, funnel-shifted by each lane's bit offset (a shift by 64 gives 0, so s = 0 needs no care),
// then up by 64 − bits. Scalar extraction and insertion into the lanes cost as much as a fifth of the
// digits' work on a 3-bit row.
__attribute__((target("avx2"))) inline __m256i fields(const uint8_t* stream, __m256i at, __m128i up) {
  const auto* base = reinterpret_cast<const long long*>(stream);
  const __m256i byte = _mm256_srli_epi64(at, 3);
  const __m256i s = _mm256_and_si256(at, _mm256_set1_epi64x(7));
  const __m256i lo = _mm256_i64gather_epi64(base, byte, 1);
  const __m256i hi = _mm256_i64gather_epi64(base + 1, byte, 1);
  const __m256i joined = _mm256_or_si256(_mm256_srlv_epi64(lo, s), _mm256_sllv_epi64(hi, _mm256_sub_epi64(_mm256_set1_epi64x(64), s)));
  return _mm256_sll_epi64(joined, up);
}

// T tiles (8·T rows) from row r0. Each tile's rows sit in two registers of four 64-bit lanes, the even
// rows in one and the odd rows in the other, so that their digits blend into 32-bit lanes in row
// order. A digit waits on the previous one's multiply (7 cycles); two tiles side by side keep the
// multipliers busy where one leaves them waiting.
template <int T>
__attribute__((target("avx2,fma"))) inline void matvec_tiles(const float* x, const PackedLinear& p, int64_t r0, const TileGrids& g,
                                                             float constant, float* out) {
  constexpr int kRegs = 2 * T, kRows = kLanes * T;
  const int64_t* starts = p.layout.starts().data();
  const int64_t* field_at = p.layout.field_offsets().data();
  const int* field_bits = p.layout.field_bits().data();
  const int* levels = p.levels.data();
  const uint32_t* grid = p.grid_index.data();
  const uint8_t* stream = p.codes();
  const float* scale = g.scale.data();
  const float* zero = g.zero.data();
  // Where each row starts in the bit stream (rows are bit-granular); register k holds rows of parity
  // k % 2 of tile k / 2.
  __m256i row[kRegs];
  for (int k = 0; k < kRegs; ++k) {
    const int64_t first = r0 + kLanes * (k / 2) + k % 2;
    const auto at = [&](int i) { return static_cast<long long>(std::min(first + 2 * i, p.rows - 1) * p.row_bits); };
    row[k] = _mm256_setr_epi64x(at(0), at(1), at(2), at(3));
  }
  __m256 acc[T];
  for (int i = 0; i < T; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t w = 0; w < p.layout.words_per_row(); ++w) {
    const __m256i at = _mm256_set1_epi64x(field_at[w]);
    const __m128i up = _mm_cvtsi32_si128(64 - field_bits[w]);
    // y = yh·2^32 + yl, each half in the low 32 bits of a lane (the multiplier reads only those).
    __m256i yl[kRegs], yh[kRegs];
    for (int k = 0; k < kRegs; ++k) {
      yl[k] = fields(stream, _mm256_add_epi64(row[k], at), up);
      yh[k] = _mm256_srli_epi64(yl[k], 32);
    }
    for (int64_t j = starts[w]; j < starts[w + 1]; ++j) {
      if (levels[j] == 1) continue;  // one-level columns are in `constant`; multiplying by 1 keeps y
      // y·L = (yh·L + (yl·L >> 32))·2^32 + (yl·L mod 2^32): the digit is bits 32.. of t = yh·L +
      // (yl·L >> 32), the new yh t's low half and the new yl a's (L ≤ 256 keeps t < 2^41).
      const __m256i L = _mm256_set1_epi64x(levels[j]);
      for (int k = 0; k < kRegs; ++k) {
        const __m256i a = _mm256_mul_epu32(yl[k], L);
        yh[k] = _mm256_add_epi64(_mm256_mul_epu32(yh[k], L), _mm256_srli_epi64(a, 32));
        yl[k] = a;
      }
      const __m256 xj = _mm256_set1_ps(x[j]);
      const size_t at_grid = static_cast<size_t>(grid[j]) * kRows;
      for (int i = 0; i < T; ++i) {
        const __m256 code = _mm256_cvtepi32_ps(_mm256_blend_epi32(_mm256_srli_epi64(yh[2 * i], 32), yh[2 * i + 1], 0xAA));
        const size_t e = at_grid + static_cast<size_t>(kLanes * i);
        acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(scale + e), _mm256_sub_ps(code, _mm256_loadu_ps(zero + e))), xj, acc[i]);
      }
    }
  }
  alignas(32) float sums[kRows];
  for (int i = 0; i < T; ++i) _mm256_store_ps(sums + kLanes * i, acc[i]);
  for (int r = 0; r < kRows && r0 + r < p.rows; ++r) out[r0 + r] = sums[r] + constant;
}

// The same products sixteen rows to a tile in 512-bit registers (eight 64-bit lanes, even and odd
// rows as above): half the instructions per weight of the AVX2 tiles on a machine with AVX-512.
#pragma GCC diagnostic push  // GCC 12's AVX-512 intrinsics: see rows_avx512 in bit_planes.cpp
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
constexpr int kWideLanes = 16;

__attribute__((target("avx512f,avx512dq"))) inline __m512i fields512(const uint8_t* stream, __m512i at, __m128i up) {
  const auto* base = reinterpret_cast<const long long*>(stream);
  const __m512i byte = _mm512_srli_epi64(at, 3);
  const __m512i s = _mm512_and_si512(at, _mm512_set1_epi64(7));
  const __m512i lo = _mm512_i64gather_epi64(byte, base, 1);
  const __m512i hi = _mm512_i64gather_epi64(byte, base + 1, 1);
  const __m512i joined = _mm512_or_si512(_mm512_srlv_epi64(lo, s), _mm512_sllv_epi64(hi, _mm512_sub_epi64(_mm512_set1_epi64(64), s)));
  return _mm512_sll_epi64(joined, up);
}

template <int T>
__attribute__((target("avx512f,avx512dq"))) inline void matvec_tiles512(const float* x, const PackedLinear& p, int64_t r0,
                                                                        const TileGrids& g, float constant, float* out) {
  constexpr int kRegs = 2 * T, kRows = kWideLanes * T;
  const int64_t* starts = p.layout.starts().data();
  const int64_t* field_at = p.layout.field_offsets().data();
  const int* field_bits = p.layout.field_bits().data();
  const int* levels = p.levels.data();
  const uint32_t* grid = p.grid_index.data();
  const uint8_t* stream = p.codes();
  const float* scale = g.scale.data();
  const float* zero = g.zero.data();
  __m512i row[kRegs];
  for (int k = 0; k < kRegs; ++k) {
    const int64_t first = r0 + kWideLanes * (k / 2) + k % 2;
    alignas(64) long long at[8];
    for (int i = 0; i < 8; ++i) at[i] = static_cast<long long>(std::min(first + 2 * i, p.rows - 1) * p.row_bits);
    row[k] = _mm512_load_si512(at);
  }
  __m512 acc[T];
  for (int i = 0; i < T; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t w = 0; w < p.layout.words_per_row(); ++w) {
    const __m512i at = _mm512_set1_epi64(field_at[w]);
    const __m128i up = _mm_cvtsi32_si128(64 - field_bits[w]);
    __m512i yl[kRegs], yh[kRegs];
    for (int k = 0; k < kRegs; ++k) {
      yl[k] = fields512(stream, _mm512_add_epi64(row[k], at), up);
      yh[k] = _mm512_srli_epi64(yl[k], 32);
    }
    for (int64_t j = starts[w]; j < starts[w + 1]; ++j) {
      if (levels[j] == 1) continue;
      const __m512i L = _mm512_set1_epi64(levels[j]);
      for (int k = 0; k < kRegs; ++k) {
        const __m512i a = _mm512_mul_epu32(yl[k], L);
        yh[k] = _mm512_add_epi64(_mm512_mul_epu32(yh[k], L), _mm512_srli_epi64(a, 32));
        yl[k] = a;
      }
      const __m512 xj = _mm512_set1_ps(x[j]);
      const size_t at_grid = static_cast<size_t>(grid[j]) * kRows;
      for (int i = 0; i < T; ++i) {
        const __m512 code = _mm512_cvtepi32_ps(_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(yh[2 * i], 32), yh[2 * i + 1]));
        const size_t e = at_grid + static_cast<size_t>(kWideLanes * i);
        acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_loadu_ps(scale + e), _mm512_sub_ps(code, _mm512_loadu_ps(zero + e))), xj, acc[i]);
      }
    }
  }
  alignas(64) float sums[kRows];
  for (int i = 0; i < T; ++i) _mm512_store_ps(sums + kWideLanes * i, acc[i]);
  for (int r = 0; r < kRows && r0 + r < p.rows; ++r) out[r0 + r] = sums[r] + constant;
}
#pragma GCC diagnostic pop

// Tiles t0..t1 (of `Rows` rows) two at a time, then one: the grids of each pair fitted (or copied
// from those prepared at load) into the thread's tables, then the ISA's kernel.
using TilesFn = void (*)(const float*, const PackedLinear&, int64_t, const TileGrids&, float, float*);
template <int Rows, TilesFn Two, TilesFn One>
void run_tiles(const float* x, const PackedLinear& p, int64_t t0, int64_t t1, float constant, float* out) {
  thread_local TileGrids g;  // its tables grow once per thread, not per call
  int64_t t = t0;
  for (; t + 2 <= t1; t += 2) {
    g.fit(p, t * Rows, 2 * Rows);
    Two(x, p, t * Rows, g, constant, out);
  }
  if (t < t1) {
    g.fit(p, t * Rows, Rows);
    One(x, p, t * Rows, g, constant, out);
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
  if (p.planes_twin && kernel_isa() == KernelIsa::Avx512Vnni) return planes_twin_matvec_rows(x, p, r0, r1, out);
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
  const KernelIsa isa = kernel_isa();
  if ((isa == KernelIsa::Avx512 || isa == KernelIsa::Avx512Vnni) && r0 % kWideLanes == 0 && (r1 % kWideLanes == 0 || r1 == p.rows))
    run_tiles<kWideLanes, matvec_tiles512<2>, matvec_tiles512<1>>(x, p, r0 / kWideLanes, (r1 + kWideLanes - 1) / kWideLanes,
                                                                   constant, out);
  else
    run_tiles<kLanes, matvec_tiles<2>, matvec_tiles<1>>(x, p, r0 / kLanes, (r1 + kLanes - 1) / kLanes, constant, out);
}

}  // namespace baq
