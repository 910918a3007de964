// The machine's bounds, measured in the run that compares against them: stream read bandwidth and
// sgemm rate (all threads). Shared by the benches so a ratio printed by one is a ratio to the same
// yardstick as the other's.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

namespace baq::bench {

// The read is the fastest this machine does: the widest vector loads it has, 64 independent sums, and
// lines asked for 4 KB ahead into L2 (into L1 read 3–8 % slower, as it did for the kernels). (A plain
// loop of one dependent sum per 64 bytes, used before, measured about 12 GB/s where this measures
// ~20–25: it bounded the additions, not the memory, and made every kernel look closer to the bound
// than it was.) Huge pages read 5–8 % faster again in a trial; the weights are in 4 KB pages (file
// pages of a checkpoint, heap copies of packed codes), so this reads 4 KB pages too.
__attribute__((target_clones("avx512f", "avx2", "default"))) inline float block_sum(const float* a, size_t n) {
  float s[64] = {};
  for (size_t b = 0; b < n; b += 64) {
    for (size_t line = 0; line < 4; ++line) __builtin_prefetch(a + b + 1024 + 16 * line, 0, 2);
    for (size_t k = 0; k < 64; ++k) s[k] += a[b + k];
  }
  float total = 0;
  for (float v : s) total += v;
  return total;
}

// Bytes per second, the best of four reads of 1 GiB (beyond any cache).
inline double stream_bandwidth() {
  const size_t n = size_t{1} << 28;
  std::vector<float> a(n, 1.0f);
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (size_t i = 0; i < n; i += 4096) total += block_sum(a.data() + i, 4096);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (total > 0) best = std::max(best, 4.0 * static_cast<double>(n) / sec);
  }
  return best;
}

// FLOP per second of a 2048-wide sgemm, the best of three.
inline double sgemm_rate() {
  const int n = 2048;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * static_cast<double>(n) / sec);
  }
  return best;
}

}  // namespace baq::bench
