#include "quant/clip_error.hpp"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>

#include "model/cpu_features.hpp"

namespace baq {
namespace {

// |d|^2.4 = d²·(d²)^(1/5) for d ≥ 0. The fifth root is a·y⁴ with y = a^(−1/5) by Newton's method
// y ← y·(6 − a·y⁵)/5, which needs no division (a division per step made this a third of GPTQ's
// per-weight work), from an exponent guess (the bits of a divided by 5, tuned for the worst case over
// 40 decades): 3 steps give 1e-6 relative, far below what separates two candidate ranges.
inline float pow_2_4(float d) {
  const float a = d * d;
  const float a_safe = a + 1e-30f;  // > 0, not denormal; a select here would stop the loop vectorizing
  float y = std::bit_cast<float>(1277800000u - std::bit_cast<uint32_t>(a_safe) / 5);
  for (int k = 0; k < 3; ++k) {
    const float y2 = y * y;
    y = y * (1.2f - 0.2f * a_safe * (y2 * y2 * y));
  }
  const float y2 = y * y;
  return a * (a_safe * (y2 * y2));  // d = 0 gives 0
}

// A value's rounding error as the clip search weighs it, |x − q(x)|^2.4, the code being the one the
// solver stores (GridParams::code_value).
inline float clip_term(float x, const GridParams& g) { return pow_2_4(std::abs(x - g.scale * (g.code_value(x) - g.zero))); }

#if defined(__GNUC__) && defined(__x86_64__)
// clip_term on 16 values at a time: the same IEEE operations in the same order as the compiled loop
// (max(0, c) and min(maxq, c) keep std::max/std::min's operand on ties; the exponent's division by 5
// as the multiply-high a compiler makes of it), so every machine gets the same bits. The search spends
// its time here — nine candidates per weight, 1e10 terms for a 1.1B model — and the compiler's
// 256-bit loop ran at half this rate.
#pragma GCC diagnostic push  // GCC 12's AVX-512 intrinsics: see rows_avx512 in bit_planes.cpp
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// No contraction: GCC fuses the intrinsics' multiply and subtract into AVX-512's FMA otherwise, which
// rounds once where the portable loop rounds twice.
struct ClipGrid512 {
  __m512 scale, zero, maxq;
};

__attribute__((target("avx512f"), optimize("fp-contract=off"), always_inline)) inline __m512 clip_term16(__m512 x, const ClipGrid512& g) {
  const __m512 round = _mm512_set1_ps(12582912.0f), tiny = _mm512_set1_ps(1e-30f);
  const __m512 c12 = _mm512_set1_ps(1.2f), c02 = _mm512_set1_ps(0.2f);
  const __m512i magic = _mm512_set1_epi32(static_cast<int>(0xCCCCCCCDu)), guess = _mm512_set1_epi32(1277800000);
  __m512 c = _mm512_add_ps(_mm512_sub_ps(_mm512_add_ps(_mm512_div_ps(x, g.scale), round), round), g.zero);
  c = _mm512_min_ps(g.maxq, _mm512_max_ps(_mm512_setzero_ps(), c));
  const __m512 q = _mm512_mul_ps(g.scale, _mm512_sub_ps(c, g.zero));
  const __m512 d = _mm512_abs_ps(_mm512_sub_ps(x, q));
  const __m512 a = _mm512_mul_ps(d, d), a_safe = _mm512_add_ps(a, tiny);
  const __m512i bits = _mm512_castps_si512(a_safe);
  const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(bits, magic), 34);
  const __m512i odd = _mm512_slli_epi64(_mm512_srli_epi64(_mm512_mul_epu32(_mm512_srli_epi64(bits, 32), magic), 34), 32);
  __m512 y = _mm512_castsi512_ps(_mm512_sub_epi32(guess, _mm512_mask_blend_epi32(0xAAAA, even, odd)));
  const __m512 a02 = _mm512_mul_ps(c02, a_safe);
  for (int step = 0; step < 3; ++step) {
    const __m512 y2 = _mm512_mul_ps(y, y);
    y = _mm512_mul_ps(y, _mm512_sub_ps(c12, _mm512_mul_ps(a02, _mm512_mul_ps(_mm512_mul_ps(y2, y2), y))));
  }
  const __m512 y2 = _mm512_mul_ps(y, y);
  return _mm512_mul_ps(a, _mm512_mul_ps(a_safe, _mm512_mul_ps(y2, y2)));
}

// Four vectors per step: one term is a chain of ~30 dependent operations, and one chain at a time
// left the vector units idle most of the time (4.8 cycles a value).
__attribute__((target("avx512f"), optimize("fp-contract=off"))) void clip_terms_avx512(const float* v, int64_t n, const GridParams& g, float* out) {
  const ClipGrid512 grid{_mm512_set1_ps(g.scale), _mm512_set1_ps(g.zero), _mm512_set1_ps(static_cast<float>(g.maxq))};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512 t0 = clip_term16(_mm512_loadu_ps(v + i), grid), t1 = clip_term16(_mm512_loadu_ps(v + i + 16), grid);
    const __m512 t2 = clip_term16(_mm512_loadu_ps(v + i + 32), grid), t3 = clip_term16(_mm512_loadu_ps(v + i + 48), grid);
    _mm512_storeu_ps(out + i, t0);
    _mm512_storeu_ps(out + i + 16, t1);
    _mm512_storeu_ps(out + i + 32, t2);
    _mm512_storeu_ps(out + i + 48, t3);
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, k, clip_term16(_mm512_maskz_loadu_ps(k, v + i), grid));
  }
}
#pragma GCC diagnostic pop
#endif

BAQ_VECTOR_CLONES void clip_terms_portable(const float* v, int64_t n, const GridParams& g, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = clip_term(v[i], g);
}

// part[k] += Σ buf[i] over i ≡ k (mod 16), the tail's values into part[0..).
BAQ_VECTOR_CLONES void add_in_lanes(const float* buf, int64_t m, double* part) {
  constexpr int64_t kLanes = 16;
  int64_t i = 0;
  for (; i + kLanes <= m; i += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) part[k] += static_cast<double>(buf[i + k]);
  for (int64_t k = 0; i < m; ++i, ++k) part[k] += static_cast<double>(buf[i]);
}

}  // namespace

void clip_terms(const float* v, int64_t n, const GridParams& g, float* out, bool wide) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (wide && cpu_has_avx512()) return clip_terms_avx512(v, n, g, out);
#endif
  clip_terms_portable(v, n, g, out);
}

// GPTQ's Σ|w − q(w)|^2.4 of `n` values on one grid, the clip search's measure of a candidate range.
double clip_error(const float* v, int64_t n, const GridParams& g) {
  // Terms of a run of values into a buffer, summed in double in 16 interleaved partial sums (two
  // vectors of doubles: with four, the sums' chain of dependent additions cost as much as the terms),
  // combined in a fixed order: the same sum on any machine.
  constexpr int64_t kRun = 256, kLanes = 16;
  float buf[kRun];
  double part[kLanes] = {};
  for (int64_t i0 = 0; i0 < n; i0 += kRun) {
    const int64_t m = std::min(kRun, n - i0);
    clip_terms(v + i0, m, g, buf);
    add_in_lanes(buf, m, part);
  }
  for (int64_t half = kLanes / 2; half > 0; half /= 2)
    for (int64_t k = 0; k < half; ++k) part[k] += part[k + half];
  return part[0];
}

}  // namespace baq
