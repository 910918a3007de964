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
__attribute__((target("avx512f"), optimize("fp-contract=off"))) void clip_terms_avx512(const float* v, int64_t n, const GridParams& g, float* out) {
  const __m512 scale = _mm512_set1_ps(g.scale), zero = _mm512_set1_ps(g.zero), maxq = _mm512_set1_ps(static_cast<float>(g.maxq));
  const __m512 round = _mm512_set1_ps(12582912.0f), floor0 = _mm512_setzero_ps(), tiny = _mm512_set1_ps(1e-30f);
  const __m512 c12 = _mm512_set1_ps(1.2f), c02 = _mm512_set1_ps(0.2f);
  const __m512i magic = _mm512_set1_epi32(static_cast<int>(0xCCCCCCCDu)), guess = _mm512_set1_epi32(1277800000);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(k, v + i);
    __m512 c = _mm512_add_ps(_mm512_sub_ps(_mm512_add_ps(_mm512_div_ps(x, scale), round), round), zero);
    c = _mm512_min_ps(maxq, _mm512_max_ps(floor0, c));
    const __m512 q = _mm512_mul_ps(scale, _mm512_sub_ps(c, zero));
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
    _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(a, _mm512_mul_ps(a_safe, _mm512_mul_ps(y2, y2))));
  }
}
#pragma GCC diagnostic pop
#endif

BAQ_VECTOR_CLONES void clip_terms_portable(const float* v, int64_t n, const GridParams& g, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = clip_term(v[i], g);
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
  // Errors of a run of values into a buffer, summed in double in four interleaved partial sums (one
  // chain of dependent additions would cost 4 cycles a value), in a fixed order: the same sum on any
  // machine.
  constexpr int64_t kRun = 256;
  float buf[kRun];
  double part[4] = {0, 0, 0, 0};
  for (int64_t i0 = 0; i0 < n; i0 += kRun) {
    const int64_t m = std::min(kRun, n - i0);
    clip_terms(v + i0, m, g, buf);
    int64_t i = 0;
    for (; i + 4 <= m; i += 4)
      for (int k = 0; k < 4; ++k) part[k] += static_cast<double>(buf[i + k]);
    for (; i < m; ++i) part[0] += static_cast<double>(buf[i]);
  }
  return (part[0] + part[1]) + (part[2] + part[3]);
}

}  // namespace baq
