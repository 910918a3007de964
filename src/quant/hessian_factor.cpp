#include "quant/hessian_factor.hpp"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <mutex>

#include "baq/error.hpp"
#include "baq/quant.hpp"

namespace baq {
namespace {

// Leaves of this many columns: the recursion's diagonal blocks are factorised by plain loops in
// double (a few percent of the work), everything else is BLAS-3 (64 measured as fast as 128 on
// n = 5632 and 2048, 32 slower). LAPACK's own potrf switches algorithms with the thread count
// (OpenBLAS runs a different blocking when threaded), which changed quantized weights between 1 and
// 2 threads; syrk and trsm split rows and columns of their output between threads, never a sum, so
// this factor is the same for any thread count.
constexpr int64_t kBlock = 64;

// In-place lower Cholesky of the kb × kb block at a (leading dimension n). False if not positive.
bool cholesky_block(float* a, int64_t kb, int64_t n) {
  for (int64_t j = 0; j < kb; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= static_cast<double>(a[j * n + k]) * a[j * n + k];
    if (!(d > 0.0) || !std::isfinite(d)) return false;
    const double l = std::sqrt(d);
    a[j * n + j] = static_cast<float>(l);
    for (int64_t i = j + 1; i < kb; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= static_cast<double>(a[i * n + k]) * a[j * n + k];
      a[i * n + j] = static_cast<float>(s / l);
    }
  }
  return true;
}

// std::reverse on all threads (an n × n matrix reversed twice per factor: 15 ms at n = 5632 on one).
void reverse_in_place(float* a, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count / 2; ++i) std::swap(a[i], a[count - 1 - i]);
}

// Where a recursive step splits n columns: near the middle, on a block boundary.
int64_t split(int64_t n) { return std::max<int64_t>(kBlock, (n / 2 + kBlock / 2) / kBlock * kBlock); }

// Lower Cholesky factor of the n × n matrix at a (leading dimension lda), in place (the strict upper
// triangle is left as it was). Recursive halves, [A 0; B C] = [L 0; B·L⁻ᵀ chol(C − B·L⁻ᵀ·(B·L⁻ᵀ)ᵀ)]:
// the triangular solve and the rank-k update run on blocks half the matrix wide, at near sgemm's
// rate, where a sweep of 128-column panels spent most of its time in thin updates (n = 5632: 120–200
// GFLOP/s against sgemm's ~300).
bool cholesky_lower(float* a, int64_t n, int64_t lda) {
  if (n <= kBlock) return cholesky_block(a, n, lda);
  const int64_t n1 = split(n), n2 = n - n1;
  if (!cholesky_lower(a, n1, lda)) return false;
  float* b = a + n1 * lda;
  const int l = static_cast<int>(lda);
  cblas_strsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, static_cast<int>(n2), static_cast<int>(n1), 1.0f,
              a, l, b, l);
  cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, static_cast<int>(n2), static_cast<int>(n1), -1.0f, b, l, 1.0f, b + n1, l);
  return cholesky_lower(b + n1, n2, lda);
}

}  // namespace

HessianFactor hessian_factor(const std::function<void(float*)>& fill, int64_t n, double damp_fraction, int max_retries,
                             const std::string& name, bool inverse_diagonal) {
  HessianFactor f;
  f.n = n;
  f.p.resize(static_cast<size_t>(n * n));
  float* a = f.p.data();
  fill(a);
  double mean_diag = 0.0;
  for (int64_t i = 0; i < n; ++i) mean_diag += a[i * n + i];
  mean_diag /= static_cast<double>(n);
  if (!(mean_diag > 0.0)) mean_diag = 1.0;  // all inputs zero: any positive scale will do
  f.damp = damp_fraction * mean_diag;
  // With J the order reversal, JHJ = LLᵀ gives H = RRᵀ for the upper R = JLJ: one Cholesky of the
  // reversed matrix (reversing the row-major array reverses both indices).
  for (int attempt = 0;; ++attempt) {
    if (attempt > max_retries)
      fail("{}: Hessian is not positive definite even with damping {:.3g} ({} retries); too few calibration tokens?",
           name, f.damp / 10.0, max_retries);
    if (attempt > 0) fill(a);
    for (int64_t i = 0; i < n; ++i) a[i * n + i] += static_cast<float>(f.damp);
    reverse_in_place(a, n * n);
    if (cholesky_lower(a, n, n)) {
      f.retries = attempt;
      break;
    }
    f.damp = f.damp > 0.0 ? f.damp * 10.0 : 1e-6 * mean_diag;
  }
  if (inverse_diagonal) {
    // [H⁻¹]_ii = Σ_k U_ki², U = R⁻¹ = J·L⁻¹·J: column i of U is column n−1−i of L⁻¹ reversed. L⁻¹'s
    // columns [c0, c1) are zero above row c0: solved from L's trailing block, 256 at a time (n³/3 in
    // all, a buffer of n × 256), each column's squares summed in row order (any thread count).
    constexpr int64_t kCols = 256;
    f.inverse_diagonal.assign(static_cast<size_t>(n), 0.0);
    std::vector<float> x(static_cast<size_t>(n * std::min(n, kCols)));
    for (int64_t c0 = 0; c0 < n; c0 += kCols) {
      const int64_t nb = std::min(kCols, n - c0), m = n - c0;
      std::fill(x.begin(), x.begin() + m * nb, 0.0f);
      for (int64_t t = 0; t < nb; ++t) x[static_cast<size_t>(t * nb + t)] = 1.0f;
      cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, static_cast<int>(m), static_cast<int>(nb),
                  1.0f, a + c0 * n + c0, static_cast<int>(n), x.data(), static_cast<int>(nb));
      for (int64_t t = 0; t < nb; ++t) {
        double sum = 0.0;
        for (int64_t k = t; k < m; ++k) sum += static_cast<double>(x[k * nb + t]) * x[k * nb + t];
        f.inverse_diagonal[static_cast<size_t>(n - 1 - (c0 + t))] = sum;
      }
    }
  }
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t i = 0; i < n; ++i) std::fill(a + i * n + i + 1, a + (i + 1) * n, 0.0f);
  reverse_in_place(a, n * n);
  // R (upper) to what the solver multiplies by: P_ij = −R_ij/R_jj above the diagonal, R_jj kept.
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) a[i * n + j] = -a[i * n + j] / a[j * n + j];
  return f;
}

namespace {

struct FactorKey {
  uint64_t fingerprint = 0;
  int64_t n = 0;
  std::vector<int64_t> perm;
  double damp_fraction = 0;
  int max_retries = 0;
  bool operator==(const FactorKey&) const = default;
};

// 64-bit FNV-1a over the Hessian's values, a word at a time (the order is in the key as it is), in
// 64 fixed slices of its values hashed on all threads, four interleaved chains each (one chain is a
// dependent multiply per word: 40 ms of a 5632-wide layer's solve), the slices' hashes then hashed in
// order: the same key for any thread count.
uint64_t fingerprint(const double* h, int64_t n) {
  constexpr int kSlices = 64, kChains = 4;
  const auto fnv = [](uint64_t x, uint64_t v) { return (x ^ v) * 1099511628211ull; };
  std::vector<uint64_t> slice(kSlices);
  const int64_t total = n * n, per_slice = (total + kSlices - 1) / kSlices;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < kSlices; ++t) {
    uint64_t x[kChains];
    for (int c = 0; c < kChains; ++c) x[c] = 1469598103934665603ull + static_cast<uint64_t>(c);
    const int64_t i0 = std::min(total, t * per_slice), i1 = std::min(total, i0 + per_slice);
    int64_t i = i0;
    for (; i + kChains <= i1; i += kChains)
      for (int c = 0; c < kChains; ++c) x[c] = fnv(x[c], std::bit_cast<uint64_t>(h[i + c]));
    for (; i < i1; ++i) x[0] = fnv(x[0], std::bit_cast<uint64_t>(h[i]));
    uint64_t y = 1469598103934665603ull;
    for (int c = 0; c < kChains; ++c) y = fnv(y, x[c]);
    slice[static_cast<size_t>(t)] = y;
  }
  uint64_t x = 1469598103934665603ull;
  for (uint64_t v : slice) x = fnv(x, v);
  return x;
}

struct FactorCache {
  std::mutex mutex;
  FactorKey key;
  std::shared_ptr<const HessianFactor> factor;
};

FactorCache& factor_cache() {
  static FactorCache cache;
  return cache;
}

}  // namespace

std::shared_ptr<const HessianFactor> shared_hessian_factor(const double* h, int64_t n, const std::vector<int64_t>& perm,
                                                           const std::function<void(float*)>& fill, double damp_fraction,
                                                           int max_retries, const std::string& name, bool inverse_diagonal) {
  FactorKey key{fingerprint(h, n), n, perm, damp_fraction, max_retries};
  FactorCache& cache = factor_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  if (cache.factor != nullptr && cache.key == key && (!inverse_diagonal || !cache.factor->inverse_diagonal.empty()))
    return cache.factor;
  cache.factor.reset();  // before the new one is made: never two factors at once
  cache.factor = std::make_shared<const HessianFactor>(hessian_factor(fill, n, damp_fraction, max_retries, name, inverse_diagonal));
  cache.key = std::move(key);
  return cache.factor;
}

void release_gptq_factor_cache() {
  FactorCache& cache = factor_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.factor.reset();
  cache.key = {};
}

}  // namespace baq
