// The format table: every row packs, unpacks and decodes exactly what the solver produced, planes
// store b bits per weight with under 1% waste on every shared model's widths, the fused matvecs equal
// the decoded rows, and the mixed-radix row layout round-trips any level counts, cut into words as
// cheaply as any cutting can be (within 0.5 % of the fewest bits).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <climits>
#include <cstring>
#include <random>

#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/pack.hpp"

namespace baq {
namespace {

// A random quantized matrix of `levels` per column, its codes drawn uniformly, ranges as the solver
// would store them (F16, or Scaled8 fractions of superblock bounds).
QuantizedMatrix random_matrix(int64_t rows, int64_t cols, const std::vector<int>& levels, int64_t group_size,
                              RangeKind ranges, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  const int64_t gs = group_size > 0 ? group_size : cols;
  m.n_groups = static_cast<int>((cols + gs - 1) / gs);
  m.levels = levels;
  m.ranges = ranges;
  m.super_groups = ranges == RangeKind::Scaled8 ? 4 : 1;
  const int n_super = (m.n_groups + m.super_groups - 1) / m.super_groups;
  m.codes.resize(static_cast<size_t>(rows * cols));
  m.column_mean.assign(static_cast<size_t>(cols), 0.25f);
  m.group_of.resize(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) m.group_of[j] = static_cast<int32_t>(j / gs);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      m.codes[r * cols + j] = static_cast<uint8_t>(std::uniform_int_distribution<int>(0, levels[j] - 1)(rng));
  m.lo.resize(static_cast<size_t>(rows * m.n_groups));
  m.hi.resize(m.lo.size());
  if (ranges == RangeKind::Scaled8) {
    m.super_lo.resize(static_cast<size_t>(rows * n_super));
    m.super_hi.resize(m.super_lo.size());
    m.qlo.resize(m.lo.size());
    m.qhi.resize(m.lo.size());
    for (size_t k = 0; k < m.super_lo.size(); ++k) superblock_bounds(-1 - std::abs(normal(rng)), 1 + std::abs(normal(rng)), m.super_lo[k], m.super_hi[k]);
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int g = 0; g < m.n_groups; ++g) {
      const size_t k = static_cast<size_t>(r * m.n_groups + g);
      const size_t sk = static_cast<size_t>(r * n_super + g / m.super_groups);
      const StoredRange sr = store_range(ranges, -std::abs(normal(rng)), std::abs(normal(rng)),
                                         ranges == RangeKind::Scaled8 ? m.super_lo[sk] : 0.0f,
                                         ranges == RangeKind::Scaled8 ? m.super_hi[sk] : 0.0f);
      m.lo[k] = sr.lo, m.hi[k] = sr.hi, m.qlo.empty() ? void() : void(m.qlo[k] = sr.qlo), m.qhi.empty() ? void() : void(m.qhi[k] = sr.qhi);
    }
  return m;
}

// Every row of the table packs and unpacks any codes it accepts exactly, across widths that exercise
// partial chunks (172, 300) and whole ones (128, 256, 768).
TEST(QuantFormats, EveryFormatRoundTripsAndDecodesToTheSolverValues) {
  int checked = 0;
  for (RangeKind ranges : {RangeKind::F16, RangeKind::Scaled8})
    for (int64_t cols : {64, 128, 172, 256, 300, 768})
      for (int bits = 1; bits <= 8; ++bits)
        for (bool uniform : {true, false}) {
          std::vector<int> levels(static_cast<size_t>(cols), 1 << bits);
          if (!uniform)
            for (size_t j = 0; j < levels.size(); ++j) levels[j] = 1 + static_cast<int>((j * 37 + bits) % 11);
          const int64_t gs = ranges == RangeKind::Scaled8 ? 32 : 0;
          QuantizedMatrix m = random_matrix(9, cols, levels, gs, ranges, static_cast<uint32_t>(cols * 10 + bits));
          QuantSettings s;
          s.group_size = static_cast<int>(gs);
          s.ranges = ranges;
          const PackedLinear p = pack_linear(m, s);
          EXPECT_EQ(p.format->codes, uniform ? CodeKind::Planes : CodeKind::Radix);
          EXPECT_EQ(p.format->ranges, ranges);
          std::vector<uint8_t> back(static_cast<size_t>(cols));
          for (int64_t r = 0; r < m.rows; ++r) {
            p.format->unpack_row(p, r, back.data());
            ASSERT_EQ(0, std::memcmp(back.data(), m.codes.data() + r * cols, static_cast<size_t>(cols)))
                << p.format->name << " cols " << cols << " bits " << bits << " row " << r;
          }
          // Decoded values are the grid values of the stored ranges.
          const Tensor d = dequantize(p);
          for (int64_t r = 0; r < m.rows; ++r)
            for (int64_t j = 0; j < cols; ++j) {
              const size_t k = static_cast<size_t>(r * m.n_groups + j / (gs > 0 ? gs : cols));
              const float want = levels[j] == 1 ? round_to_f16(0.25f) : fit_grid(m.lo[k], m.hi[k], levels[j] - 1, false).value(m.codes[r * cols + j]);
              ASSERT_EQ(d.data[r * cols + j], want) << p.format->name << " " << r << "," << j;
            }
          // The decoder batches use (the layout's fast path where it has one) gives the same bits.
          std::vector<float> decoded(static_cast<size_t>(m.rows * cols));
          decode_rows(p, 0, p.rows, decoded.data());
          ASSERT_EQ(0, std::memcmp(decoded.data(), d.data, decoded.size() * sizeof(float))) << p.format->name << " cols " << cols << " bits " << bits;
          ++checked;
        }
  EXPECT_EQ(checked, 2 * 6 * 8 * 2);
}

// Planes store b bits per weight plus under a byte per plane per row: within 1% on every width of the
// shared models (64 and 172: stories260K; 256 and 768: kdoc) and exact where rows fill whole bytes.
TEST(QuantFormats, PlanesWasteUnderOnePercent) {
  for (int64_t cols : {64, 172, 256, 768, 2048, 5632})
    for (int bits = 2; bits <= 8; ++bits) {
      QuantSettings s;
      const QuantizedMatrix m = random_matrix(4, cols, std::vector<int>(static_cast<size_t>(cols), 1 << bits), 0, RangeKind::F16, 1);
      const PackedLinear p = pack_linear(m, s);
      const double ideal = static_cast<double>(cols) * bits, stored = static_cast<double>(p.row_bits);
      EXPECT_GE(stored, ideal);
      EXPECT_LE(stored, ideal * 1.01) << cols << " cols, " << bits << " bits";
      if ((cols * bits) % 8 == 0 && cols % 128 == 0) {
        EXPECT_EQ(stored, ideal);
      }
      EXPECT_EQ(storage_bits(p).codes, stored * 4);
    }
}

// An input whose magnitude differs from segment to segment: each segment must be rounded and scaled
// at its own step.
std::vector<float> varying_input(int64_t cols) {
  std::vector<float> x(static_cast<size_t>(cols));
  for (size_t j = 0; j < x.size(); ++j)
    x[j] = static_cast<float>(std::sin(0.37 * static_cast<double>(j) + 0.1) * (1.0 + static_cast<double>(j % 700) / 100.0));
  return x;
}

// Row r of the decoded weights dotted with x in double, with Σ|w·x| (F32 rounding's scale) and Σ|w|
// (the input rounding's).
struct DecodedDot {
  double ref = 0, mag = 0, wsum = 0;
};
DecodedDot decoded_dot(const Tensor& d, int64_t r, const std::vector<float>& x) {
  const auto cols = static_cast<int64_t>(x.size());
  DecodedDot out;
  for (int64_t j = 0; j < cols; ++j) {
    const double w = d.data[r * cols + j];
    out.ref += w * x[static_cast<size_t>(j)];
    out.mag += std::abs(w * x[static_cast<size_t>(j)]);
    out.wsum += std::abs(w);
  }
  return out;
}

// The fused one-token product of every format, every width and group size, equals the decoded rows
// dotted in double (to F32 rounding): the SIMD planes paths (AVX-512, AVX2), their scalar fallback
// (groups of 24 columns, not a multiple of 16) and the radix path (43 rows: the first 32 as pairs of
// tiles, the rest a pair whose last rows are past the end). The VNNI path rounds x per block to 16
// bits (step at most max|x|/32512), or 8 when asked (max|x|/127): there the bound adds Σ_j |w_j|·step/2.
// At 16 bits its input segments run to 512 columns where the whole chunks and the groups allow
// (2092 columns per-row; 256 and 384 take 256 and 128); at 8 bits to 128. Under VNNI, radix linears
// with per-row grids (and mixed level counts, one-level columns among them) run through their planes
// twin: x/(L − 1) into the planes kernel, the zero terms per level count after.
TEST(QuantFormats, FusedMatvecEqualsDecodedRows) {
  const std::pair<KernelIsa, int> paths[] = {{KernelIsa::Avx512Vnni, 16}, {KernelIsa::Avx512Vnni, 8}, {KernelIsa::Avx512, 16},
                                              {KernelIsa::Avx2, 16}, {KernelIsa::Scalar, 16}};
  set_radix_twins(true);
  for (const auto& [isa, input_bits] : paths) {
  set_fused_input_bits(input_bits);
  limit_kernel_isa(isa);
  for (RangeKind ranges : {RangeKind::F16, RangeKind::Scaled8})
    for (int64_t cols : {128, 172, 256, 300, 384, 2092})
      for (int64_t gs : {0, 24, 32, 64, 128})
        for (int bits : {1, 2, 3, 4, 5, 6, 7, 8})
          for (bool uniform : {true, false}) {
            if (ranges == RangeKind::Scaled8 && gs == 0) continue;
            std::vector<int> levels(static_cast<size_t>(cols), 1 << bits);
            if (!uniform)
              for (size_t j = 0; j < levels.size(); ++j) levels[j] = 1 + static_cast<int>((j * 13 + bits) % 10);  // one-level columns too
            QuantizedMatrix m = random_matrix(43, cols, levels, gs, ranges, static_cast<uint32_t>(cols + gs + bits));
            QuantSettings s;
            s.group_size = static_cast<int>(gs);
            s.ranges = ranges;
            const PackedLinear p = pack_linear(m, s);
            const Tensor d = dequantize(p);
            const std::vector<float> x = varying_input(cols);
            std::vector<float> y(static_cast<size_t>(p.rows), -7.0f);
            packed_matvec_rows(x.data(), p, 0, 32, y.data());
            packed_matvec_rows(x.data(), p, 32, p.rows, y.data());
            double xmax = 0;
            for (float v : x) xmax = std::max(xmax, std::abs(static_cast<double>(v)));
            for (int64_t r = 0; r < p.rows; ++r) {
              const DecodedDot e = decoded_dot(d, r, x);
              // Half the input's step per weight.
              const double step = input_bits == 16 ? xmax / 32512.0 : xmax / 127.0;
              const double rounding = isa == KernelIsa::Avx512Vnni ? e.wsum * step / 2 : 0.0;
              ASSERT_NEAR(y[static_cast<size_t>(r)], e.ref, 2e-6 * e.mag + rounding + 1e-9) << p.format->name << " cols " << cols
                                                                              << " gs " << gs << " bits " << bits
                                                                              << " row " << r << " isa " << static_cast<int>(isa);
            }
          }
  }
  limit_kernel_isa(KernelIsa::Avx512Vnni);
  set_fused_input_bits(16);
  set_radix_twins(false);
}

// BAQ's usual shape for the planes twin: wide rows, groups, a few level counts around 2^b (7, 8, 9 at
// 3 bits) and some one-level columns, under both range storages: the twin's products (x/(L − 1) per
// column, each group at its range) and zero terms (per group and level count) give the decoded rows'
// dot within the 16-bit input's rounding, and the twin is built (else the radix tiles would answer).
TEST(QuantFormats, RadixPlanesTwinWithGroupsEqualsDecodedRows) {
  if (kernel_isa() != KernelIsa::Avx512Vnni) GTEST_SKIP() << "no AVX-512 VNNI";
  set_radix_twins(true);
  for (RangeKind ranges : {RangeKind::F16, RangeKind::Scaled8}) {
    const int64_t cols = 2048, gs = 128;
    std::vector<int> levels(static_cast<size_t>(cols));
    for (size_t j = 0; j < levels.size(); ++j) levels[j] = j % 97 == 0 ? 1 : 7 + static_cast<int>((j * 13) % 3);
    QuantizedMatrix m = random_matrix(40, cols, levels, gs, ranges, 11);
    QuantSettings s;
    s.group_size = static_cast<int>(gs);
    s.ranges = ranges;
    const PackedLinear p = pack_linear(m, s);
    ASSERT_TRUE(p.planes_twin != nullptr) << p.format->name;
    const Tensor d = dequantize(p);
    const std::vector<float> x = varying_input(cols);
    std::vector<float> y(static_cast<size_t>(p.rows));
    packed_matvec_rows(x.data(), p, 0, p.rows, y.data());
    double xmax = 0;
    for (float v : x) xmax = std::max(xmax, std::abs(static_cast<double>(v)));
    for (int64_t r = 0; r < p.rows; ++r) {
      const DecodedDot e = decoded_dot(d, r, x);
      ASSERT_NEAR(y[static_cast<size_t>(r)], e.ref, 2e-6 * e.mag + e.wsum * xmax / 32512.0 / 2 + 1e-9) << p.format->name << " row " << r;
    }
  }
  set_radix_twins(false);
}

// A short batch (a prompt) goes through the fused product row block by row block, every input in
// turn, each keeping its own prepared rounding on the thread: it must give, bit for bit, what the
// inputs give one at a time (as generation computes them), for every format row. A long batch decodes
// W (within the fused products' rounding of the decoded product), unless the fused inputs are 8-bit:
// then every batch is fused, so that perplexity measures what generation computes.
TEST(QuantFormats, ShortBatchEqualsOneInputAtATime) {
  set_radix_twins(true);  // mixed levels with per-row grids (gs 0) run through the planes twin
  for (int bits : {2, 3, 4})
    for (bool uniform : {true, false})
    for (int gs : {64, 0}) {
      const int64_t cols = 256;
      std::vector<int> levels(static_cast<size_t>(cols), 1 << bits);
      if (!uniform)
        for (size_t j = 0; j < levels.size(); ++j) levels[j] = 2 + static_cast<int>((j * 13 + bits) % 9);
      QuantizedMatrix m = random_matrix(100, cols, levels, gs, RangeKind::F16, static_cast<uint32_t>(bits));
      QuantSettings s;
      s.group_size = gs;
      const PackedLinear p = pack_linear(m, s);
      const Tensor d = dequantize(p);
      for (int input_bits : {16, 8})
      for (int64_t n : {int64_t{5}, int64_t{40}, kFusedBatch + 3}) {
        set_fused_input_bits(input_bits);
        std::vector<float> x(static_cast<size_t>(n * cols)), batch(static_cast<size_t>(n * p.rows)), one(static_cast<size_t>(p.rows));
        for (size_t j = 0; j < x.size(); ++j) x[j] = static_cast<float>(std::sin(0.37 * static_cast<double>(j) + 0.1) * (1 + j % 7));
        packed_matmul(x.data(), n, p, batch.data());
        for (int64_t t = 0; t < n; ++t) {
          packed_matvec(x.data() + t * cols, p, one.data());
          for (int64_t r = 0; r < p.rows; ++r) {
            const float got = batch[static_cast<size_t>(t * p.rows + r)];
            if (n <= kFusedBatch || input_bits == 8) {
              ASSERT_EQ(got, one[static_cast<size_t>(r)]) << p.format->name << " bits " << bits << " n " << n << " input " << t
                                                          << " row " << r << " input bits " << input_bits;
            } else {
              double ref = 0, mag = 0;
              for (int64_t j = 0; j < cols; ++j) {
                ref += static_cast<double>(d.data[r * cols + j]) * x[static_cast<size_t>(t * cols + j)];
                mag += std::abs(static_cast<double>(d.data[r * cols + j]) * x[static_cast<size_t>(t * cols + j)]);
              }
              ASSERT_NEAR(got, ref, 2e-6 * mag + 1e-9) << "decoded: bits " << bits << " n " << n << " input " << t << " row " << r;
            }
          }
        }
      }
    }
  set_fused_input_bits(16);
  set_radix_twins(false);
}

// What the packer will store is known before solving: planned_storage equals storage_bits of the
// packed matrix for every format, grid and level pattern.
TEST(StoredBudget, PlannedStorageIsWhatThePackerStores) {
  for (RangeKind ranges : {RangeKind::F16, RangeKind::Scaled8})
    for (int64_t cols : {64, 172, 256})
      for (int64_t gs : {int64_t{0}, int64_t{32}, int64_t{64}})
        for (int pattern = 0; pattern < 3; ++pattern) {
          if (ranges == RangeKind::Scaled8 && gs == 0) continue;
          std::vector<int> levels(static_cast<size_t>(cols), 8);
          for (size_t j = 0; j < levels.size(); ++j)
            if (pattern == 1) levels[j] = 1 + static_cast<int>((j * 13) % 9);  // radix, one-level columns too
            else if (pattern == 2) levels[j] = 4;
          QuantizedMatrix m = random_matrix(11, cols, levels, gs, ranges, static_cast<uint32_t>(cols + gs + pattern));
          QuantSettings s;
          s.group_size = static_cast<int>(gs);
          s.ranges = ranges;
          s.super_groups = 4;
          const StorageBits want = storage_bits(pack_linear(m, s)), got = planned_storage(levels, 11, s);
          EXPECT_EQ(got.codes, want.codes) << cols << " " << gs << " " << pattern;
          EXPECT_EQ(got.ranges, want.ranges) << cols << " " << gs << " " << pattern;
          EXPECT_EQ(got.widths, want.widths) << cols << " " << gs << " " << pattern;
          EXPECT_EQ(got.means, want.means) << cols << " " << gs << " " << pattern;
        }
}

// A stored budget picks the most code bits that fit, then the finest grid: never over the budget,
// and one more bit (with the coarsest grid) would not fit.
TEST(StoredBudget, UniformSettingsMeetTheBudgetFromBelow) {
  for (int64_t cols : {64, 172, 256, 4096})
    for (double bpw : {2.3, 2.6, 3.0, 3.3, 3.56, 4.25, 4.5, 5.0, 6.5, 8.2}) {
      const int64_t rows = 96;
      if (bpw < 2.0 + 32.0 / static_cast<double>(cols)) {  // 2-bit codes and one F16 pair per row
        EXPECT_THROW(uniform_settings_for_bpw(bpw, rows, cols, QuantSettings{}), Error);
        continue;
      }
      const QuantSettings s = uniform_settings_for_bpw(bpw, rows, cols, QuantSettings{});
      const double weights = static_cast<double>(rows * cols);
      const auto stored = [&](const QuantSettings& q) {
        return planned_storage(std::vector<int>(static_cast<size_t>(cols), 1 << q.bits), rows, q).total() / weights;
      };
      EXPECT_LE(stored(s), bpw) << cols << " " << bpw;
      if (s.bits < 8) {
        QuantSettings more;
        more.bits = s.bits + 1;
        EXPECT_GT(stored(more), bpw) << cols << " " << bpw;
      }
      // The budget is spent: what is left is under one step of grid refinement.
      EXPECT_GT(stored(s), bpw - 1.0) << cols << " " << bpw;
    }
  EXPECT_THROW(uniform_settings_for_bpw(2.1, 8, 64, QuantSettings{}), Error);
}

// Slices of rows packed alone and concatenated are the matrix packed whole: planes (whole bytes per
// row) and radix (rows of 263 bits, so slices meet inside a byte).
TEST(StoredBudget, ConcatenatedRowSlicesEqualTheWholeMatrix) {
  std::vector<int> mixed(100);
  for (size_t j = 0; j < mixed.size(); ++j) mixed[j] = 2 + static_cast<int>(j % 7);
  for (RangeKind ranges : {RangeKind::F16, RangeKind::Scaled8})
  for (const std::vector<int>& levels : {std::vector<int>(100, 8), mixed}) {
    const QuantizedMatrix whole = random_matrix(30, 100, levels, 32, ranges, 5);
    QuantSettings s;
    s.group_size = 32;
    s.ranges = ranges;
    s.super_groups = 4;
    std::vector<PackedLinear> parts;
    for (int64_t r0 : {0, 8, 24}) {
      const int64_t n = r0 == 0 ? 8 : r0 == 8 ? 16 : 6;
      QuantizedMatrix slice = whole;
      slice.rows = n;
      auto cut = [&](auto& v, int64_t per_row) {
        v.assign(v.begin() + r0 * per_row, v.begin() + (r0 + n) * per_row);
      };
      const auto n_super = static_cast<int64_t>((whole.n_groups + whole.super_groups - 1) / whole.super_groups);
      cut(slice.codes, 100);
      cut(slice.lo, whole.n_groups);
      cut(slice.hi, whole.n_groups);
      if (ranges == RangeKind::Scaled8) {
        cut(slice.qlo, whole.n_groups);
        cut(slice.qhi, whole.n_groups);
        cut(slice.super_lo, n_super);
        cut(slice.super_hi, n_super);
      }
      parts.push_back(pack_linear(slice, s));
    }
    const PackedLinear joined = concat_rows(std::move(parts)), direct = pack_linear(whole, s);
    ASSERT_EQ(joined.rows, 30);
    const Tensor a = dequantize(joined), b = dequantize(direct);
    EXPECT_EQ(0, std::memcmp(a.data, b.data, 30 * 100 * sizeof(float)));
    if (levels == mixed) {
      EXPECT_EQ(direct.format->codes, CodeKind::Radix);
      EXPECT_NE(direct.row_bits % 8, 0);
    }
    EXPECT_EQ(0, std::memcmp(joined.code_words.data(), direct.code_words.data(), static_cast<size_t>(direct.code_bytes())));
    EXPECT_EQ(storage_bits(joined).total(), storage_bits(direct).total());
  }
}

TEST(QuantFormats, TableRowsByName) {
  for (const QuantFormat& f : quant_formats()) EXPECT_EQ(&quant_format_named(f.name), &f);
  EXPECT_THROW(quant_format_named("zip"), Error);
  EXPECT_EQ(mixed_radix_codes_per_word(2), 64);
  EXPECT_EQ(mixed_radix_codes_per_word(3), 40);   // 3^40 < 2^64 < 3^41
  EXPECT_EQ(mixed_radix_codes_per_word(5), 27);   // 5^27 < 2^64 < 5^28
  EXPECT_EQ(mixed_radix_codes_per_word(256), 8);
}

// The least cost of any cutting of a row's digits into words of product ≤ 2^64, a word costing the
// ceil(log2 P) bits it is stored in plus `charge`: every cutting tried, from the end of the row back
// (memo: the best for each suffix, so long rows stay fast).
int64_t cheapest_cutting(const std::vector<int>& digits, int charge, size_t from, std::vector<int64_t>& memo) {
  if (from == digits.size()) return 0;
  if (memo[from] >= 0) return memo[from];
  int64_t best = INT64_MAX;
  unsigned __int128 product = 1;
  for (size_t end = from; end < digits.size(); ++end) {
    product *= static_cast<unsigned>(digits[end]);
    if (product > (static_cast<unsigned __int128>(1) << 64)) break;
    int bits = 0;
    while ((static_cast<unsigned __int128>(1) << bits) < product) ++bits;
    best = std::min(best, bits + charge + cheapest_cutting(digits, charge, end + 1, memo));
  }
  return memo[from] = best;
}

TEST(RowRadixLayout, SegmentsAndRoundTrips) {
  std::vector<int> levels(8, 256);
  levels.push_back(3);
  EXPECT_EQ(RowRadixLayout(levels).words_per_row(), 2);  // 256^8 = 2^64 fills a word exactly
  EXPECT_EQ(RowRadixLayout(levels).row_bits(), 64 + 2);
  EXPECT_EQ(RowRadixLayout(std::vector<int>(9, 1)).words_per_row(), 0);
  EXPECT_EQ(RowRadixLayout(std::vector<int>(9, 1)).row_bits(), 0);
  EXPECT_THROW(RowRadixLayout({2, 257}), Error);

  // A word is y = ceil(v·2^b / P) in b = ceil(log2 P) bits for v = d0·L1 + d1 (first column most
  // significant), held in memory in a 64-bit word's top bits.
  // {3, 1, 5}: P = 15, 4 bits; codes (2, 4) -> v = 14; 14·16/15 = 14.93 -> 15.
  {
    const RowRadixLayout layout({3, 1, 5});
    const uint8_t codes[3] = {2, 0, 4};
    uint64_t word = 0;
    layout.pack_row(codes, &word);
    EXPECT_EQ(word, uint64_t{15} << 60);
    EXPECT_EQ(layout.row_bits(), 4);
    uint8_t stored[24] = {0xA0, 0xFF};  // stored from bit 2 of the stream: other bits kept (16 bytes
                                        // readable past the row, as load_row needs)
    layout.store_row(&word, stored, 2);
    EXPECT_EQ(stored[0], 0xA0 | (15 << 2));
    EXPECT_EQ(stored[1], 0xFF);
    uint64_t back = 0;
    layout.load_row(stored, 2, &back);
    EXPECT_EQ(back, word);
    // A word of 256^8 = 2^64 exactly holds the bytes themselves, first column in the high byte.
    const std::vector<int> bytes_levels(8, 256);
    const uint8_t b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    RowRadixLayout(bytes_levels).pack_row(b, &word);
    EXPECT_EQ(word, 0x0102030405060708ull);
  }

  std::mt19937 rng(3);
  std::uniform_int_distribution<int> pick(1, 256);
  for (int trial = 0; trial < 60; ++trial) {
    std::vector<int> lv(static_cast<size_t>(1 + trial * 7));
    for (auto& L : lv) L = trial % 3 == 0 ? pick(rng) : 1 + pick(rng) % 9;  // wide and narrow mixes
    const RowRadixLayout layout(lv);
    std::vector<uint8_t> codes(lv.size()), back(lv.size(), 0xEE);
    for (size_t j = 0; j < lv.size(); ++j) codes[j] = static_cast<uint8_t>(std::uniform_int_distribution<int>(0, lv[j] - 1)(rng));
    // Through the stored stream, at an odd bit offset, between neighbours' bits.
    std::vector<uint64_t> words(static_cast<size_t>(layout.words_per_row())), loaded(words.size());
    layout.pack_row(codes.data(), words.data());
    std::vector<uint8_t> stream(static_cast<size_t>(layout.row_bits() / 8 + 32), 0x5A);
    layout.store_row(words.data(), stream.data(), 13);
    layout.load_row(stream.data(), 13, loaded.data());
    layout.unpack_row(loaded.data(), back.data());
    ASSERT_EQ(back, codes) << "trial " << trial;
    EXPECT_EQ(stream[0] & 0x1F, 0x5A & 0x1F);
    double ideal = 0;
    std::vector<int> digits;
    for (int L : lv) {
      ideal += std::log2(double(L));
      if (L > 1) digits.push_back(L);
    }
    EXPECT_GE(static_cast<double>(layout.row_bits()), ideal);
    EXPECT_LT(static_cast<double>(layout.row_bits()), ideal + static_cast<double>(layout.words_per_row())) << "trial " << trial;
    // The cheapest cutting with a word charged a bit, or the fewest bits when that costs over 0.5 %.
    std::vector<int64_t> memo0(digits.size(), -1), memo1(digits.size(), -1);
    const int64_t fewest = cheapest_cutting(digits, 0, 0, memo0), charged = cheapest_cutting(digits, 1, 0, memo1);
    EXPECT_TRUE(layout.row_bits() == fewest || layout.row_bits() + layout.words_per_row() == charged) << "trial " << trial;
    EXPECT_LE(200 * (layout.row_bits() - fewest), fewest) << "trial " << trial;
  }
}

// Bits of the stream against a bit-by-bit reference: bit k is bit k % 8 of byte k / 8.
TEST(RowRadixLayout, BitStreamReadsAndWritesSingleBits) {
  std::mt19937_64 rng(11);
  std::vector<uint8_t> stream(80), naive(80);  // 16 readable bytes past the last bit written
  for (int trial = 0; trial < 2000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 64);
    const int64_t at = static_cast<int64_t>(rng() % 400);
    const uint64_t value = rng();
    write_bits(stream.data(), at, value, n);
    for (int i = 0; i < n; ++i) {
      const int64_t k = at + i;
      naive[static_cast<size_t>(k / 8)] = static_cast<uint8_t>((naive[static_cast<size_t>(k / 8)] & ~(1 << (k % 8))) | (((value >> i) & 1) << (k % 8)));
    }
    ASSERT_EQ(stream, naive) << "trial " << trial;
    const uint64_t mask = n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
    ASSERT_EQ(read_bits(stream.data(), at, n), value & mask);
  }
}

// Mixed level counts as BAQ allocates them (2 to 16 levels per column, about 3 bits on average),
// on every width of the shared models and of 1–8B ones: stored code bits within 1 % of Σ log2 L_j.
TEST(RowRadixLayout, MixedLevelsWasteUnderOnePercent) {
  std::mt19937 rng(5);
  for (int64_t cols : {64, 172, 256, 688, 768, 2048, 5632, 14336})
    for (double mean_bits : {2.0, 2.5, 3.0, 3.5, 4.5})
      for (int trial = 0; trial < 4; ++trial) {
        std::normal_distribution<double> bits(mean_bits, 0.6);
        std::vector<int> lv(static_cast<size_t>(cols));
        double ideal = 0;
        for (auto& L : lv) {
          L = std::clamp(static_cast<int>(std::lround(std::exp2(bits(rng)))), 2, 16);
          ideal += std::log2(double(L));
        }
        const RowRadixLayout layout(lv);
        EXPECT_LE(static_cast<double>(layout.row_bits()), 1.01 * ideal) << cols << " cols at " << mean_bits << " bits";
      }
}

TEST(Half, RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7BFF);                    // saturates, stays finite
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie to even (down)
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie to even (up)
  for (uint32_t h = 0; h < 0x7C00; ++h) ASSERT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h) << h;
}

}  // namespace
}  // namespace baq
