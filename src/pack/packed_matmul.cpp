#include <cblas.h>

#include <algorithm>

#include "baq/blas.hpp"
#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/pack.hpp"

namespace baq {

namespace {

// A row's grids, one per (group, distinct level count), as scale and zero tables, and its codes.
struct RowGrids {
  std::vector<float> scale, zero;
  std::vector<uint8_t> codes;
};

void fit_row(const PackedLinear& p, int64_t r, RowGrids& g) {
  g.scale.resize(static_cast<size_t>(p.n_groups) * p.distinct_levels.size());
  g.zero.resize(g.scale.size());
  fit_row_grids(p, r, g.scale.data(), g.zero.data());
  g.codes.resize(static_cast<size_t>(p.cols));
  p.format->unpack_row(p, r, g.codes.data());
}

// value = scale·(code − zero) from the column's grid, or the stored value of a one-level column: the
// same two IEEE operations as GridParams::value, so every instruction set gives the same bits.
inline void values_generic(const PackedLinear& p, const RowGrids& g, float* out) {
  const uint8_t* codes = g.codes.data();
  const uint32_t* index = p.grid_index.data();
  const uint8_t* one = p.one_level.data();
  const float *scale = g.scale.data(), *zero = g.zero.data(), *fixed = p.column_value.data();
  for (int64_t j = 0; j < p.cols; ++j) {
    const float v = scale[index[j]] * (static_cast<float>(codes[j]) - zero[index[j]]);
    out[j] = one[j] ? fixed[j] : v;
  }
}

__attribute__((target("avx2"))) void values_avx2(const PackedLinear& p, const RowGrids& g, float* out) {
  values_generic(p, g, out);  // compiled again for AVX2: vectorized with gathers
}

template <bool kAvx2>
void decode(const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  RowGrids g;
  for (int64_t r = r0; r < r1; ++r) {
    fit_row(p, r, g);
    float* row = out + (r - r0) * p.cols;
    if constexpr (kAvx2)
      values_avx2(p, g, row);
    else
      values_generic(p, g, row);
  }
}

}  // namespace

void fit_row_grids(const PackedLinear& p, int64_t r, float* scale, float* zero) {
  const size_t nd = p.distinct_levels.size();
  for (int64_t k = 0; k < p.n_groups; ++k) {
    float lo, hi;
    p.range(r, k, lo, hi);
    for (size_t d = 0; d < nd; ++d) {
      const GridParams grid = p.distinct_levels[d] > 1 ? fit_grid(lo, hi, p.distinct_levels[d] - 1, p.sym) : GridParams{0.0f, 0.0f, 0};
      scale[static_cast<size_t>(k) * nd + d] = grid.scale;
      zero[static_cast<size_t>(k) * nd + d] = grid.zero;
    }
  }
}

namespace {
KernelIsa g_isa_limit = KernelIsa::Avx512Vnni;
}  // namespace

void limit_kernel_isa(KernelIsa isa) { g_isa_limit = isa; }

namespace {
int g_fused_input_bits = 16;
}  // namespace

void set_fused_input_bits(int bits) {
  if (bits != 8 && bits != 16) fail("fused input bits: {} (8 or 16)", bits);
  g_fused_input_bits = bits;
}

int fused_input_bits() { return g_fused_input_bits; }

bool every_batch_fused() { return g_fused_input_bits == 8; }

namespace {
bool g_radix_twins = false;
}  // namespace

void set_radix_twins(bool on) { g_radix_twins = on; }
bool radix_twins() { return g_radix_twins; }

KernelIsa kernel_isa() {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2");
  static const KernelIsa best = avx512 && __builtin_cpu_supports("avx512vnni") ? KernelIsa::Avx512Vnni
                                : avx512                                      ? KernelIsa::Avx512
                                : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2") ? KernelIsa::Avx2
                                                                                                   : KernelIsa::Scalar;
  return static_cast<int>(best) > static_cast<int>(g_isa_limit) ? best : g_isa_limit;
}

bool cpu_has_avx2() { return kernel_isa() != KernelIsa::Scalar; }

void decode_rows_scalar(const PackedLinear& p, int64_t r0, int64_t r1, float* out) { decode<false>(p, r0, r1, out); }
void decode_rows_avx2(const PackedLinear& p, int64_t r0, int64_t r1, float* out) { decode<true>(p, r0, r1, out); }

void decode_rows(const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  if (p.format->decode_rows != nullptr && p.format->decode_rows(p, r0, r1, out)) return;
  if (cpu_has_avx2())
    decode_rows_avx2(p, r0, r1, out);
  else
    decode_rows_scalar(p, r0, r1, out);
}

void packed_matmul(const float* x, int64_t rows_x, const PackedLinear& p, float* out) {
  // A short batch (a prompt): each task takes a few rows of W through every input while they sit in
  // cache, with the fused product, so W is read from memory once. Decoding every weight to F32 for
  // sgemm costs a fixed ~0.4 s on a 2-bit 1.1B model however few the inputs (17 tokens: 0.6 s
  // against 0.2 s fused), then a little less per input than the fused product: they cross at
  // 110–130 inputs there.
  if (rows_x <= kFusedBatch || every_batch_fused()) {
    constexpr int64_t kRowsPerJob = 32;
    const int64_t jobs = (p.rows + kRowsPerJob - 1) / kRowsPerJob;
    // At most kFusedBatch inputs at a time: each keeps its prepared rounding on every thread.
    for (int64_t t0 = 0; t0 < rows_x; t0 += kFusedBatch) {
      const int64_t n = std::min(kFusedBatch, rows_x - t0);
      const float* xs = x + t0 * p.cols;
      float* outs = out + t0 * p.rows;
#pragma omp parallel
      {
        const SteadyInput steady(xs, n, p.cols);
        // Each thread a contiguous run of rows: its codes are one stream that its prefetches run ahead
        // of. (Jobs taken in turn, as before, interleaved the threads' rows: a prefetch two calls ahead
        // fell in the other thread's rows at every job's end, and `bench_kernels
        // --benchmark_filter=FromMemory` read 2 / 3 / 4-bit codes at 46–56 / 32–36 / 33–37 G
        // weights/s where this reads 83–99 / 55–59 / 61–63 with the prefetch into L2.)
#pragma omp for schedule(static)
        for (int64_t job = 0; job < jobs; ++job) {
          const int64_t r0 = job * kRowsPerJob, r1 = std::min(p.rows, r0 + kRowsPerJob);
          for (int64_t t = 0; t < n; ++t) p.format->matvec_rows(xs + t * p.cols, p, r0, r1, outs + t * p.rows);
        }
      }
    }
    return;
  }
  matmul_converted_rows(x, rows_x, p.rows, p.cols, [&](int64_t r0, int64_t r1, float* dst) { decode_rows(p, r0, r1, dst); }, out);
}

void packed_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  p.format->matvec_rows(x, p, r0, r1, out);
}

void packed_matvec(const float* x, const PackedLinear& p, float* out) {
  constexpr int64_t kRowsPerJob = 32;
  const int64_t jobs = (p.rows + kRowsPerJob - 1) / kRowsPerJob;
#pragma omp parallel for schedule(static)  // contiguous rows per thread: see packed_matmul
  for (int64_t job = 0; job < jobs; ++job)
    p.format->matvec_rows(x, p, job * kRowsPerJob, std::min(p.rows, (job + 1) * kRowsPerJob), out);
}

}  // namespace baq
