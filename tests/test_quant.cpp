// RTN and GPTQ on random layers: closed forms, an independent naive GPTQ (explicit inverse-Hessian
// downdates in double, no Cholesky), and the properties the paper's method guarantees.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <omp.h>

#include <random>
#include <set>

#include "baq/blas.hpp"
#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/pack.hpp"
#include "baq/quant.hpp"
#include "quant/clip_error.hpp"
#include "quant/hessian_factor.hpp"
#include "test_util.hpp"

namespace baq {
namespace {

// Grid bounds are stored as F16: round as the format does (the test's own conversion).
float f16(double v) {
  const float f = static_cast<float>(v);
  if (f == 0.0f) return 0.0f;
  const uint16_t h = test::f32_to_f16(f);
  return f16_to_f32(h);
}

struct Layer {
  int64_t rows, cols;
  std::vector<float> w;
  std::vector<double> h;
};

// W ~ N(0,1); H = 2·XᵀX/n from correlated inputs with uneven column scales (a non-uniform Hessian).
Layer random_layer(int64_t rows, int64_t cols, uint32_t seed, int64_t n = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Layer l{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols)), std::vector<double>(static_cast<size_t>(cols * cols), 0.0)};
  for (auto& v : l.w) v = static_cast<float>(normal(rng));
  if (n == 0) n = 4 * cols;
  std::vector<double> scale(static_cast<size_t>(cols));
  for (auto& s : scale) s = std::exp(normal(rng));
  std::vector<double> x(static_cast<size_t>(cols));
  for (int64_t t = 0; t < n; ++t) {
    const double shared = normal(rng);
    for (int64_t j = 0; j < cols; ++j) x[j] = scale[j] * (normal(rng) + 0.7 * shared);
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) l.h[i * cols + j] += 2.0 * x[i] * x[j] / static_cast<double>(n);
  }
  return l;
}

// GPTQ as the OBS update with an explicitly maintained inverse Hessian (Frantar et al., eq. 2-3),
// in double, one column at a time; grids fitted per group on the updated weights at group starts.
// The inverse of an n × n positive definite matrix by Gauss–Jordan without pivoting, in double.
std::vector<double> naive_inverse(std::vector<double> a, int64_t n) {
  std::vector<double> inv(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) inv[i * n + i] = 1;
  for (int64_t p = 0; p < n; ++p) {
    const double piv = a[p * n + p];
    for (int64_t j = 0; j < n; ++j) a[p * n + j] /= piv, inv[p * n + j] /= piv;
    for (int64_t i = 0; i < n; ++i)
      if (i != p) {
        const double f = a[i * n + p];
        for (int64_t j = 0; j < n; ++j) a[i * n + j] -= f * a[p * n + j], inv[i * n + j] -= f * inv[p * n + j];
      }
  }
  return inv;
}

std::vector<double> naive_gptq(const Layer& l, const QuantSettings& s, std::vector<double>* col_loss) {
  const int64_t R = l.rows, C = l.cols;
  std::vector<int64_t> order(static_cast<size_t>(C));
  std::iota(order.begin(), order.end(), 0);
  if (s.act_order)
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l.h[a * C + a] > l.h[b * C + b]; });
  std::vector<double> H(static_cast<size_t>(C * C)), W(static_cast<size_t>(R * C));
  double mean = 0;
  for (int64_t i = 0; i < C; ++i) mean += l.h[order[i] * C + order[i]] / C;
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j < C; ++j) H[i * C + j] = l.h[order[i] * C + order[j]] + (i == j ? s.damp * mean : 0.0);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = 0; i < C; ++i) W[r * C + i] = l.w[r * C + order[i]];
  std::vector<double> inv = naive_inverse(H, C);
  const int64_t gs = s.group_size > 0 ? s.group_size : C;
  const int maxq = (1 << s.bits) - 1;
  std::vector<GridParams> grid(static_cast<size_t>(R));
  std::vector<double> Q(static_cast<size_t>(R * C));
  col_loss->assign(static_cast<size_t>(C), 0.0);
  for (int64_t i = 0; i < C; ++i) {
    if (i % gs == 0)
      for (int64_t r = 0; r < R; ++r) {
        double lo = W[r * C + i], hi = lo;
        for (int64_t c = i; c < std::min(C, i + gs); ++c) lo = std::min(lo, W[r * C + c]), hi = std::max(hi, W[r * C + c]);
        grid[r] = fit_grid(f16(lo), f16(hi), maxq, s.sym);
      }
    const double d = inv[i * C + i];
    for (int64_t r = 0; r < R; ++r) {
      const double q = grid[r].value(grid[r].code(static_cast<float>(W[r * C + i])));
      Q[r * C + order[i]] = q;
      const double e = (W[r * C + i] - q) / d;
      (*col_loss)[order[i]] += (W[r * C + i] - q) * (W[r * C + i] - q) / d;  // = (w-q)²/U_ii², U_ii² = [H⁻¹]_ii
      for (int64_t j = i + 1; j < C; ++j) W[r * C + j] -= e * inv[i * C + j];
    }
    // Remove column i from the inverse (Schur complement).
    for (int64_t a1 = i + 1; a1 < C; ++a1)
      for (int64_t b1 = i + 1; b1 < C; ++b1) inv[a1 * C + b1] -= inv[a1 * C + i] * inv[i * C + b1] / d;
  }
  return Q;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

TEST(Grid, AsymmetricAndSymmetricClosedForms) {
  const GridParams a = fit_grid(-1.0f, 3.0f, 15, false);
  EXPECT_FLOAT_EQ(a.scale, 4.0f / 15);
  EXPECT_EQ(a.zero, std::nearbyint(1.0f / (4.0f / 15)));
  EXPECT_EQ(a.code(3.0f), 15);
  EXPECT_EQ(a.code(-5.0f), 0);  // clamped
  EXPECT_FLOAT_EQ(a.value(a.code(0.0f)), 0.0f);  // zero is exactly representable
  const GridParams s = fit_grid(-1.0f, 3.0f, 7, true);
  EXPECT_FLOAT_EQ(s.scale, 6.0f / 7);
  EXPECT_EQ(s.zero, 4.0f);
  const GridParams z = fit_grid(0.0f, 0.0f, 3, false);
  EXPECT_FLOAT_EQ(z.scale, 2.0f / 3);
}

TEST(Rtn, MatchesRoundToNearestWithPartialLastGroup) {
  const Layer l = random_layer(5, 37, 1);  // 37 = 2 full groups of 16 + a partial group of 5
  QuantSettings s;
  s.bits = 3;
  s.group_size = 16;
  const QuantizedMatrix m = quantize_rtn(l.w.data(), 5, 37, s);
  EXPECT_EQ(m.n_groups, 3);
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t j = 0; j < 37; ++j) {
      const int64_t c0 = j / 16 * 16, c1 = std::min<int64_t>(37, c0 + 16);
      float lo = 0, hi = 0;
      for (int64_t c = c0; c < c1; ++c) lo = std::min(lo, l.w[r * 37 + c]), hi = std::max(hi, l.w[r * 37 + c]);
      lo = f16(lo), hi = f16(hi);
      const float scale = (hi - lo) / 7, zero = std::nearbyint(-lo / scale);
      const float code = std::clamp(std::nearbyint(l.w[r * 37 + j] / scale) + zero, 0.0f, 7.0f);
      EXPECT_FLOAT_EQ(m.dequant[r * 37 + j], scale * (code - zero));
    }
  // Stored as bit planes (2 + 1 bits): 37 columns are a partial chunk, ⌈37·2/8⌉ + ⌈37/8⌉ = 10 + 5
  // bytes per row; F16 min and max per (row, group); no per-column widths for uniform levels.
  const StorageBits b = storage_bits(pack_linear(m, s));
  EXPECT_DOUBLE_EQ(b.codes, 5 * 15 * 8.0);
  EXPECT_DOUBLE_EQ(b.ranges, 5 * 3 * 32.0);
  EXPECT_DOUBLE_EQ(b.widths + b.means, 0.0);
}

// The thread-count determinism tests (the Hessian factor's, quantize's, MPI's) rest on BLAS giving
// the same bits for 1 and 2 threads in the calls baq makes. OpenBLAS's Haswell kernels did not on
// AVX-512 Zen 5 vCPUs (strsm, ssyrk, sgemm), and this VM kind's environment asks for them
// (OPENBLAS_CORETYPE=Haswell): configure_blas, which every test binary runs, must have put a kernel
// set as wide as the CPU in their place.
TEST(Blas, KernelSetAsWideAsTheCpu) {
  const std::string core = baq::blas_core_name();
  __builtin_cpu_init();
  if (core.empty()) GTEST_SKIP() << "not a DYNAMIC_ARCH OpenBLAS";
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    EXPECT_TRUE(core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids") << core;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_NE(core, "Prescott");
  }
}

// The factor R (upper, stored as P_ij = −R_ij/R_jj above the diagonal and R_jj on it) must give
// R·Rᵀ = H + λI, checked in double against H itself (n not a multiple of the 64-column leaf block:
// recursive halves of uneven sizes); the inverse's diagonal, when asked for, must match a naive
// Gauss–Jordan inverse; both bit-identical for 1 and 2 threads.
TEST(HessianFactor, FactorRebuildsTheDampedHessianForAnyThreadCount) {
  for (const int64_t n : {5, 300, 700}) {
    std::mt19937 rng(static_cast<unsigned>(n));
    std::normal_distribution<double> nd;
    const int64_t samples = n + 40;
    std::vector<double> x(static_cast<size_t>(samples * n)), h(static_cast<size_t>(n * n), 0.0);
    for (auto& v : x) v = nd(rng);
    for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] *= 30.0;  // uneven scales, as activations have
    for (int64_t s = 0; s < samples; ++s)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) h[i * n + j] += 2.0 * x[s * n + i] * x[s * n + j] / samples;
    const auto fill = [&](float* a) {
      for (int64_t i = 0; i < n * n; ++i) a[i] = static_cast<float>(h[i]);
    };
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const baq::HessianFactor one = baq::hessian_factor(fill, n, 0.01, 3, "t", true);
    omp_set_num_threads(2);
    const baq::HessianFactor two = baq::hessian_factor(fill, n, 0.01, 3, "t", true);
    omp_set_num_threads(threads);
    ASSERT_EQ(one.p, two.p) << "n=" << n;
    ASSERT_EQ(one.inverse_diagonal, two.inverse_diagonal) << "n=" << n;
    ASSERT_EQ(one.retries, 0);
    EXPECT_TRUE(baq::hessian_factor(fill, n, 0.01, 3, "t", false).inverse_diagonal.empty());
    const float* p = one.p.data();
    std::vector<double> r(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        if (j < i) {
          ASSERT_EQ(p[i * n + j], 0.0f);
        }
        r[i * n + j] = j == i ? p[j * n + j] : j > i ? -static_cast<double>(p[i * n + j]) * p[j * n + j] : 0.0;
      }
    // (R·Rᵀ)_ij = Σ_{k ≥ max(i, j)} R_ik R_jk against H + λI, relative to the diagonal's scale.
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; ++i) scale = std::max(scale, h[i * n + i]);
    for (int64_t i = 0; i < n; i += std::max<int64_t>(1, n / 23))
      for (int64_t j = 0; j < n; ++j) {
        double v = 0.0;
        for (int64_t k = std::max(i, j); k < n; ++k) v += r[i * n + k] * r[j * n + k];
        worst = std::max(worst, std::abs(v - h[i * n + j] - (i == j ? one.damp : 0.0)) / scale);
      }
    EXPECT_LT(worst, 1e-5) << "n=" << n;  // F32 Cholesky
    if (n > 300) continue;  // the naive inverse is n³ in double: the two smaller sizes suffice
    std::vector<double> damped(h);
    for (int64_t i = 0; i < n; ++i) damped[i * n + i] += one.damp;
    const std::vector<double> inv = naive_inverse(damped, n);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(one.inverse_diagonal[i], inv[i * n + i], 2e-3 * inv[i * n + i]) << "n=" << n << " i=" << i;
  }
}

// stories260K's FFN width 172 = 5 groups of 32 + a partial group of 12, quantized with its own grid
// and counted exactly; GPTQ handles the same layout.
TEST(Gptq, PartialLastGroupOnWidth172) {
  const Layer l = random_layer(8, 172, 14);
  QuantSettings s;
  s.bits = 4;
  s.group_size = 32;
  const auto g = quantize_gptq(l.w.data(), 8, 172, l.h.data(), s);
  EXPECT_EQ(g.n_groups, 6);
  EXPECT_EQ(g.group_of[171], 5);
  EXPECT_EQ(g.group_of[160], 5);
  EXPECT_EQ(g.group_of[159], 4);
  for (int64_t r = 0; r < 8; ++r)  // the partial group's values lie on its own 16-level grid
    for (int64_t j = 160; j < 172; ++j) {
      EXPECT_EQ(g.grid(r, j).maxq, 15);
      EXPECT_FLOAT_EQ(g.dequant[r * 172 + j], g.grid(r, j).value(g.codes[r * 172 + j]));
    }
  // A 4-bit plane: one 128-column chunk (64 bytes) and 44 columns dense (22 bytes) per row.
  EXPECT_DOUBLE_EQ(storage_bits(pack_linear(g, s)).total(), 8 * 86 * 8.0 + 8 * 6 * 32.0);
}

TEST(Gptq, IdentityHessianEqualsRtnExactly) {
  const Layer l = random_layer(16, 24, 2);
  std::vector<double> eye(24 * 24, 0.0);
  for (int i = 0; i < 24; ++i) eye[i * 24 + i] = 1.0;
  for (int gs : {0, 8}) {
    QuantSettings s;
    s.bits = 3;
    s.group_size = gs;
    const auto g = quantize_gptq(l.w.data(), 16, 24, eye.data(), s);
    const auto r = quantize_rtn(l.w.data(), 16, 24, s);
    EXPECT_EQ(g.dequant, r.dequant) << "group size " << gs;
    EXPECT_EQ(g.codes, r.codes);
  }
}

// The clip search (GPTQ's `mse` grid search) picks, per row and group, the stored range among the
// min-max range shrunk by 1 − 0.025·k (k = 0..8) whose grid rounds the group's weights with the least
// Σ|w − q|^2.4. With an identity Hessian no error spreads, so the group's weights are the original
// ones: a naive reference in double (std::pow, std::nearbyint) recomputes every candidate's error,
// and the solver's choice must be the best to the precision of its float arithmetic. Also the search
// must find something better than min-max on weights with outliers.
TEST(Gptq, ClipSearchPicksTheRangeWithTheLeastPowerError) {
  for (int gs : {0, 16}) {
    Layer l = random_layer(24, 48, 11);
    for (int r = 0; r < 24; r += 3) l.w[static_cast<size_t>(r * 48 + r % 48)] *= 6.0f;  // outliers
    std::vector<double> eye(48 * 48, 0.0);
    for (int i = 0; i < 48; ++i) eye[i * 48 + i] = 1.0;
    QuantSettings s;
    s.bits = 3;
    s.group_size = gs;
    s.clip_search = true;
    const QuantizedMatrix g = quantize_gptq(l.w.data(), 24, 48, eye.data(), s);
    const int64_t n = gs > 0 ? gs : 48;
    int shrunk = 0;
    for (int64_t r = 0; r < 24; ++r)
      for (int64_t g0 = 0; g0 < 48; g0 += n) {
        const float* v = l.w.data() + r * 48 + g0;
        const float lo = *std::min_element(v, v + n), hi = *std::max_element(v, v + n);
        const auto error = [&](float clo, float chi) {
          const double scale = (static_cast<double>(std::max(chi, 0.0f)) - std::min(clo, 0.0f)) / 7.0;
          const double zero = std::nearbyint(-std::min(clo, 0.0f) / scale);
          double e = 0;
          for (int64_t j = 0; j < n; ++j) {
            const double c = std::clamp(std::nearbyint(v[j] / scale) + zero, 0.0, 7.0);
            e += std::pow(std::abs(v[j] - scale * (c - zero)), 2.4);
          }
          return e;
        };
        double best = -1;
        for (int k = 0; k <= 8; ++k) {
          const float shrink = 1.0f - 0.025f * static_cast<float>(k);
          const StoredRange c = store_range(RangeKind::F16, lo * shrink, hi * shrink, 0.0f, 0.0f);
          const double e = error(c.lo, c.hi);
          if (best < 0 || e < best) best = e;
        }
        const size_t at = static_cast<size_t>(r * g.n_groups + g0 / n);
        const double chosen = error(g.lo[at], g.hi[at]);
        EXPECT_LE(chosen, best * (1 + 1e-5)) << "row " << r << " group " << g0 / n << " gs " << gs;
        const StoredRange minmax = store_range(RangeKind::F16, lo, hi, 0.0f, 0.0f);
        shrunk += g.lo[at] != minmax.lo || g.hi[at] != minmax.hi;
      }
    EXPECT_GT(shrunk, 0) << "gs " << gs;
  }
}

// The clip search's terms |x − q(x)|^2.4: against std::pow in double of the same float errors, over values
// from 1e-20 to clipped outliers, exact zeros and run lengths that are not a multiple of 16; and the
// AVX-512 path (where the CPU has it) gives the portable loop's bits, so a machine's vector width
// never changes which range the search picks.
TEST(Gptq, ClipTermsMatchThePowerAndEachOther) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  int64_t checked = 0;
  for (int t = 0; t < 300; ++t) {
    std::vector<float> v(static_cast<size_t>(1 + t % 53));
    const float magnitude = t % 7 == 0 ? 1e-20f : static_cast<float>(1 + t % 13);
    for (auto& x : v) x = normal(rng) * magnitude;
    if (t % 5 == 0) v[0] = 0.0f;
    const GridParams g = fit_grid(-1.5f * static_cast<float>(1 + t % 3), 2.0f, (1 << (2 + t % 5)) - 1, t % 2 == 1);
    std::vector<float> wide(v.size()), portable(v.size());
    clip_terms(v.data(), static_cast<int64_t>(v.size()), g, wide.data(), true);
    clip_terms(v.data(), static_cast<int64_t>(v.size()), g, portable.data(), false);
    double sum = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(wide[i]), std::bit_cast<uint32_t>(portable[i])) << "t " << t << " i " << i;
      const float d = std::abs(v[i] - g.scale * (g.code_value(v[i]) - g.zero));  // the rounding error in float, as stored
      const double expected = std::pow(static_cast<double>(d), 2.4);
      EXPECT_NEAR(portable[i], expected, 2e-6 * expected + 1e-37) << "t " << t << " x " << v[i];
      sum += portable[i];
      ++checked;
    }
    EXPECT_NEAR(clip_error(v.data(), static_cast<int64_t>(v.size()), g), sum, 1e-12 * sum + 1e-37);
  }
  EXPECT_GT(checked, 5000);
}

TEST(Gptq, ProxyLossBelowRtn) {
  for (int bits : {2, 3, 4}) {
    const Layer l = random_layer(64, 48, 3 + bits);
    QuantSettings s;
    s.bits = bits;
    const auto g = quantize_gptq(l.w.data(), 64, 48, l.h.data(), s);
    const auto r = quantize_rtn(l.w.data(), 64, 48, s);
    const double lg = proxy_loss(l.w.data(), g.dequant.data(), 64, 48, l.h.data());
    const double lr = proxy_loss(l.w.data(), r.dequant.data(), 64, 48, l.h.data());
    EXPECT_LT(lg, 0.8 * lr) << bits << " bits";
  }
}

// The solver's proxy loss from its own column losses (W − Q = e·U) is the direct tr((W−Q)H(W−Q)ᵀ) of
// the undamped Hessian: with damping, act-order, groups, a dead input and BAQ's mixed levels.
TEST(Gptq, ProxyLossFromColumnLossesEqualsTheDirectProduct) {
  Layer l = random_layer(40, 48, 77);
  for (int64_t j = 0; j < 48; ++j) l.h[5 * 48 + j] = l.h[j * 48 + 5] = 0.0;  // input 5 never active
  std::vector<int> mixed(48);
  for (size_t j = 0; j < mixed.size(); ++j) mixed[j] = 1 + static_cast<int>((j * 7) % 13);
  for (bool act_order : {false, true})
    for (int64_t gs : {0, 16})
      for (const std::vector<int>* levels : std::vector<const std::vector<int>*>{nullptr, &mixed}) {
        QuantSettings s;
        s.bits = 3;
        s.damp = 0.05;
        s.act_order = act_order;
        s.group_size = static_cast<int>(gs);
        const QuantizedMatrix q = quantize_gptq(l.w.data(), 40, 48, l.h.data(), s, "t", levels);
        const double direct = proxy_loss(l.w.data(), q.dequant.data(), 40, 48, l.h.data());
        ASSERT_GT(q.proxy_loss, 0.0);
        EXPECT_NEAR(q.proxy_loss, direct, 1e-4 * direct) << act_order << " " << gs << " " << (levels != nullptr);
        EXPECT_LT(q.proxy_loss, q.loss);  // the damping's share is not in it
        EXPECT_EQ(proxy_loss(l.w.data(), q, l.h.data()), q.proxy_loss);
      }
}

// The inverse-Hessian factor kept between calls is reused only for the same Hessian content, order
// and damping: a second weight matrix on the same Hessian (q/k/v), the same buffer with other values
// (a later block's Hessian), act-order and another damping all give what a fresh solve gives.
TEST(Gptq, SharedFactorGivesWhatAFreshSolveGives) {
  Layer a = random_layer(24, 32, 5);
  const Layer b = random_layer(24, 32, 6);
  QuantSettings s;
  s.bits = 3;
  auto fresh = [&](const std::vector<float>& w, const std::vector<double>& h, const QuantSettings& st) {
    release_gptq_factor_cache();
    return quantize_gptq(w.data(), 24, 32, h.data(), st, "t");
  };
  auto same = [](const QuantizedMatrix& x, const QuantizedMatrix& y) {
    return x.codes == y.codes && x.dequant == y.dequant && x.loss == y.loss && x.damp == y.damp;
  };
  const QuantizedMatrix qa = fresh(a.w, a.h, s);
  EXPECT_TRUE(same(quantize_gptq(b.w.data(), 24, 32, a.h.data(), s, "t"), fresh(b.w, a.h, s)));  // reused
  quantize_gptq(a.w.data(), 24, 32, a.h.data(), s, "t");  // the factor of a.h is kept
  std::vector<double> h2 = a.h;
  a.h = b.h;  // the same buffer, other values
  EXPECT_TRUE(same(quantize_gptq(a.w.data(), 24, 32, a.h.data(), s, "t"), fresh(a.w, b.h, s)));
  QuantSettings ordered = s;
  ordered.act_order = true;
  quantize_gptq(a.w.data(), 24, 32, a.h.data(), s, "t");
  EXPECT_TRUE(same(quantize_gptq(a.w.data(), 24, 32, a.h.data(), ordered, "t"), fresh(a.w, a.h, ordered)));
  QuantSettings damped = s;
  damped.damp = 0.1;
  quantize_gptq(a.w.data(), 24, 32, a.h.data(), s, "t");
  const QuantizedMatrix qd = quantize_gptq(a.w.data(), 24, 32, a.h.data(), damped, "t");
  EXPECT_TRUE(same(qd, fresh(a.w, a.h, damped)));
  EXPECT_GT(qd.damp, qa.damp);
  EXPECT_FALSE(same(quantize_gptq(a.w.data(), 24, 32, h2.data(), s, "t"), qd));
  release_gptq_factor_cache();
}

TEST(Gptq, BlockedEqualsUnblocked) {
  const Layer l = random_layer(32, 40, 9);
  for (int gs : {0, 16}) {
    QuantSettings s;
    s.bits = 3;
    s.group_size = gs;
    s.block_size = 1;
    const auto a = quantize_gptq(l.w.data(), 32, 40, l.h.data(), s);
    s.block_size = 7;  // does not divide 40 or 16
    const auto b = quantize_gptq(l.w.data(), 32, 40, l.h.data(), s);
    s.block_size = 128;
    const auto c = quantize_gptq(l.w.data(), 32, 40, l.h.data(), s);
    int differ = 0;
    for (size_t i = 0; i < a.codes.size(); ++i) differ += (a.codes[i] != b.codes[i]) + (a.codes[i] != c.codes[i]);
    EXPECT_LE(differ, 2) << "codes differ beyond rounding, group size " << gs;
    EXPECT_LT(rel(a.loss, b.loss), 1e-3);
    EXPECT_LT(rel(a.loss, c.loss), 1e-3);
  }
}

TEST(Gptq, VariantsMatchNaiveReference) {
  const Layer l = random_layer(24, 36, 12);
  for (int variant = 0; variant < 4; ++variant) {
    QuantSettings s;
    s.bits = variant == 3 ? 2 : 4;
    s.group_size = variant >= 1 ? 12 : 0;
    s.sym = variant == 2;
    s.act_order = variant == 3;
    s.block_size = 5;
    const auto m = quantize_gptq(l.w.data(), 24, 36, l.h.data(), s);
    std::vector<double> ref_loss;
    const auto ref = naive_gptq(l, s, &ref_loss);
    int differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) differ += std::abs(ref[i] - m.dequant[i]) > 1e-4 * (1 + std::abs(ref[i]));
    EXPECT_LE(differ, 2) << "variant " << variant;
    for (int64_t j = 0; j < 36; ++j) EXPECT_LT(rel(m.column_loss[j], ref_loss[j]), 2e-2) << "variant " << variant << " col " << j;
    EXPECT_LT(rel(m.loss, std::accumulate(ref_loss.begin(), ref_loss.end(), 0.0)), 1e-3);
  }
}

// A singular Hessian (all-zero inputs on some columns, duplicated columns) still factors, with the
// damping raised and recorded; NaN in the Hessian is refused with the layer's name.
TEST(Gptq, SingularHessiansRetryDamping) {
  Layer l = random_layer(8, 10, 13);
  std::vector<double> dup(100, 0.0);
  for (int i = 0; i < 10; ++i)
    for (int j = 0; j < 10; ++j) dup[i * 10 + j] = 1.0;  // rank one: every column the same input
  QuantSettings s;
  s.damp = 0.0;  // no initial damping: the first factorisation must fail
  const auto m = quantize_gptq(l.w.data(), 8, 10, dup.data(), s, "blk.0.attn.q");
  EXPECT_GT(m.damp_retries, 0);
  EXPECT_GT(m.damp, 0.0);
  for (float v : m.dequant) EXPECT_TRUE(std::isfinite(v));
  std::vector<double> zero(100, 0.0);
  const auto z = quantize_gptq(l.w.data(), 8, 10, zero.data(), QuantSettings{}, "blk.0.attn.k");
  for (float v : z.dequant) EXPECT_EQ(v, 0.0f);  // dead inputs: weights zeroed
  zero[5] = NAN;
  try {
    quantize_gptq(l.w.data(), 8, 10, zero.data(), QuantSettings{}, "blk.0.attn.v");
    ADD_FAILURE() << "NaN Hessian accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn.v"), std::string::npos);
  }
}

}  // namespace
}  // namespace baq

namespace baq {
namespace {

// BAQ at R̄ = 3 and 4 code bits against GPTQ at the same bits, on layers whose Hessians make the
// columns' losses very uneven: the proxy loss must drop, and the budget must hold.
TEST(Baq, ProxyLossBelowGptqAtTheSameBudget) {
  for (int bits : {2, 3, 4}) {
    const Layer l = random_layer(64, 96, 40 + bits);
    QuantSettings s;
    s.bits = bits;
    const auto g = quantize_gptq(l.w.data(), 64, 96, l.h.data(), s);
    const auto b = quantize_baq(l.w.data(), 64, 96, l.h.data(), s, bits);
    double mean_bits = 0;
    for (int L : b.levels) mean_bits += std::log2(static_cast<double>(L)) / 96;
    EXPECT_LE(mean_bits, bits + 1e-12);
    EXPECT_GT(mean_bits, bits - 1.0 / 96);
    EXPECT_NEAR(b.loss_before, g.loss, 1e-6 * g.loss);  // pass 1 is GPTQ at 2^bits levels
    const double pg = proxy_loss(l.w.data(), g.dequant.data(), 64, 96, l.h.data());
    const double pb = proxy_loss(l.w.data(), b.quantized.dequant.data(), 64, 96, l.h.data());
    EXPECT_LT(pb, pg) << bits << " bits";
    EXPECT_LT(b.quantized.loss, b.loss_before) << bits << " bits";
    EXPECT_LT(b.predicted_loss_ratio, 1.0);
  }
}

// Per-column grids: every column's values lie on its own L_j-level grid; one-level columns hold
// their mean; storage counts log2 L_j code bits per weight, min/max per row, a width per column.
TEST(Baq, PerColumnGridsAndStorage) {
  const Layer l = random_layer(16, 12, 50);
  std::vector<int> levels = {1, 2, 3, 5, 6, 7, 9, 16, 1, 255, 256, 4};
  QuantSettings s;
  s.bits = 3;
  const auto m = quantize_gptq(l.w.data(), 16, 12, l.h.data(), s, "t", &levels);
  for (int64_t j = 0; j < 12; ++j) {
    std::set<float> values;
    for (int64_t r = 0; r < 16; ++r) {
      const float v = m.dequant[r * 12 + j];
      if (levels[j] == 1) {
        EXPECT_EQ(v, m.column_mean[j]);
      } else {
        const GridParams g = m.grid(r, j);
        EXPECT_EQ(g.maxq, levels[j] - 1);
        EXPECT_LT(m.codes[r * 12 + j], levels[j]);
        EXPECT_FLOAT_EQ(v, g.value(m.codes[r * 12 + j]));
      }
    }
  }
  const StorageBits b = storage_bits(pack_linear(m, s));
  // The product of all level counts is 2^35.46: one word per row, stored in the 36 bits it needs, rows
  // back to back (one-level columns are free).
  EXPECT_DOUBLE_EQ(b.codes, 16 * 36.0);
  EXPECT_DOUBLE_EQ(b.ranges, 16 * 32.0);
  EXPECT_DOUBLE_EQ(b.widths, 12 * 8.0);
  EXPECT_DOUBLE_EQ(b.means, 2 * 16.0);
  levels[3] = 0;
  EXPECT_THROW(quantize_gptq(l.w.data(), 16, 12, l.h.data(), s, "t", &levels), Error);
}

// BAQ's order-invariant coefficient weights each column by 1/[H⁻¹]_jj of the damped Hessian: checked
// against a naive Gauss–Jordan inverse in double, and with act-order (another visiting order) the
// same weights come out.
TEST(Baq, OrderInvariantColumnWeightsAreTheInverseHessianDiagonal) {
  const Layer l = random_layer(8, 24, 61);
  for (bool act_order : {false, true}) {
    QuantSettings s;
    s.bits = 3;
    s.act_order = act_order;
    const std::vector<int> uniform(24, 8);  // BAQ's first pass: uniform levels given
    const QuantizedMatrix m = quantize_gptq(l.w.data(), 8, 24, l.h.data(), s, "t", &uniform);
    const int n = 24;
    std::vector<double> damped(l.h);
    for (int i = 0; i < n; ++i) damped[i * n + i] += m.damp;
    const std::vector<double> inv = naive_inverse(damped, n);
    for (int j = 0; j < n; ++j) EXPECT_NEAR(m.column_weight[j], 1.0 / inv[j * n + j], 1e-4 / inv[j * n + j]) << j;
    // Σ(w−q)² as rounded: the first column GPTQ visits has not been updated yet, so it is the
    // original weights' error.
    if (!act_order) {
      double e = 0;
      for (int r = 0; r < 8; ++r) e += std::pow(static_cast<double>(l.w[r * 24]) - m.dequant[r * 24], 2);
      EXPECT_NEAR(m.column_sq_error[0], e, 1e-5 * e);
    }
  }
}

// Shrinkage toward the geometric mean in log space: closed form, dead columns untouched.
TEST(Baq, ShrinkageMovesCoefficientsTowardTheirGeometricMean) {
  std::vector<double> c = {1.0, 4.0, 16.0, 0.0};
  shrink_coefficients(c, 0.5);  // geomean of the live ones: 4
  EXPECT_NEAR(c[0], 2.0, 1e-12);
  EXPECT_NEAR(c[1], 4.0, 1e-12);
  EXPECT_NEAR(c[2], 8.0, 1e-12);
  EXPECT_EQ(c[3], 0.0);
  std::vector<double> u = {1.0, 4.0, 16.0};
  shrink_coefficients(u, 1.0);
  for (double v : u) EXPECT_NEAR(v, 4.0, 1e-12);
  EXPECT_THROW(shrink_coefficients(u, 1.5), Error);
}

}  // namespace
}  // namespace baq
