// The format table: every row packs, unpacks and decodes exactly what the solver produced, planes
// store b bits per weight with under 1% waste on every shared model's widths, the fused matvecs equal
// the decoded rows, and the mixed-radix row layout round-trips any level counts.
#include <gtest/gtest.h>

#include <cmath>
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
            p.format->unpack_row(p, p.row_codes(r), back.data());
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
      const double ideal = static_cast<double>(cols) * bits, stored = 8.0 * static_cast<double>(p.row_bytes);
      EXPECT_GE(stored, ideal);
      EXPECT_LE(stored, ideal * 1.01) << cols << " cols, " << bits << " bits";
      if ((cols * bits) % 8 == 0 && cols % 128 == 0) {
        EXPECT_EQ(stored, ideal);
      }
      EXPECT_EQ(storage_bits(p).codes, stored * 4);
    }
}

// The fused one-token product of every format, every width and group size, equals the decoded rows
// dotted in double (to F32 rounding): the SIMD planes paths (AVX-512, AVX2), their scalar fallback
// (groups of 24 columns, not a multiple of 16) and the radix path. The VNNI path rounds x to 16 bits
// per block (step at most max|x|/32512): there the bound adds Σ_j |w_j|·max|x|/65024.
TEST(QuantFormats, FusedMatvecEqualsDecodedRows) {
  for (KernelIsa isa : {KernelIsa::Avx512Vnni, KernelIsa::Avx512, KernelIsa::Avx2, KernelIsa::Scalar}) {
  limit_kernel_isa(isa);
  for (RangeKind ranges : {RangeKind::F16, RangeKind::Scaled8})
    for (int64_t cols : {128, 172, 256, 300, 384})
      for (int64_t gs : {0, 24, 32, 64, 128})
        for (int bits : {2, 3, 4, 5, 7, 8})
          for (bool uniform : {true, false}) {
            if (ranges == RangeKind::Scaled8 && gs == 0) continue;
            std::vector<int> levels(static_cast<size_t>(cols), 1 << bits);
            if (!uniform)
              for (size_t j = 0; j < levels.size(); ++j) levels[j] = 2 + static_cast<int>((j * 13 + bits) % 9);
            QuantizedMatrix m = random_matrix(40, cols, levels, gs, ranges, static_cast<uint32_t>(cols + gs + bits));
            QuantSettings s;
            s.group_size = static_cast<int>(gs);
            s.ranges = ranges;
            const PackedLinear p = pack_linear(m, s);
            const Tensor d = dequantize(p);
            std::vector<float> x(static_cast<size_t>(cols)), y(static_cast<size_t>(p.rows), -7.0f);
            for (size_t j = 0; j < x.size(); ++j) x[j] = static_cast<float>(std::sin(0.37 * static_cast<double>(j) + 0.1));
            packed_matvec_rows(x.data(), p, 0, 32, y.data());
            packed_matvec_rows(x.data(), p, 32, p.rows, y.data());
            double xmax = 0;
            for (float v : x) xmax = std::max(xmax, std::abs(static_cast<double>(v)));
            for (int64_t r = 0; r < p.rows; ++r) {
              double ref = 0, mag = 0, wsum = 0;
              for (int64_t j = 0; j < cols; ++j) {
                ref += static_cast<double>(d.data[r * cols + j]) * x[static_cast<size_t>(j)];
                mag += std::abs(static_cast<double>(d.data[r * cols + j]) * x[static_cast<size_t>(j)]);
                wsum += std::abs(static_cast<double>(d.data[r * cols + j]));
              }
              const double rounding = isa == KernelIsa::Avx512Vnni ? wsum * xmax / 65024.0 : 0.0;
              ASSERT_NEAR(y[static_cast<size_t>(r)], ref, 2e-6 * mag + rounding + 1e-9) << p.format->name << " cols " << cols
                                                                              << " gs " << gs << " bits " << bits
                                                                              << " row " << r << " isa " << static_cast<int>(isa);
            }
          }
  }
  limit_kernel_isa(KernelIsa::Avx512Vnni);
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

// Slices of rows packed alone and concatenated are the matrix packed whole.
TEST(StoredBudget, ConcatenatedRowSlicesEqualTheWholeMatrix) {
  for (RangeKind ranges : {RangeKind::F16, RangeKind::Scaled8}) {
    const std::vector<int> levels(100, 8);
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
    EXPECT_EQ(0, std::memcmp(joined.code_words.data(), direct.code_words.data(), static_cast<size_t>(30 * direct.row_bytes)));
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

TEST(RowRadixLayout, SegmentsAndRoundTrips) {
  EXPECT_EQ(RowRadixLayout(std::vector<int>(200, 3)).words_per_row(), 5);  // 40 ternary digits per word
  std::vector<int> levels(8, 256);
  levels.push_back(3);
  EXPECT_EQ(RowRadixLayout(levels).words_per_row(), 2);  // 256^8 = 2^64 fills a word exactly
  EXPECT_EQ(RowRadixLayout(std::vector<int>(9, 1)).words_per_row(), 0);
  EXPECT_THROW(RowRadixLayout({2, 257}), Error);

  // A full word is ceil(v·2^64 / P) for v = d0·L1 + d1 (first column most significant); the last word
  // of a row keeps only the k bytes its product needs (P ≤ 2^8k), ceil(v·2^8k / P) in its top bytes.
  // {3, 1, 5}: P = 15, one byte; codes (2, 4) -> v = 14; 14·256/15 = 238.93 -> 239, stored as 1 byte.
  {
    const RowRadixLayout layout({3, 1, 5});
    const uint8_t codes[3] = {2, 0, 4};
    uint64_t word = 0;
    layout.pack_row(codes, &word);
    EXPECT_EQ(word, uint64_t{239} << 56);
    EXPECT_EQ(layout.row_bytes(), 1);
    uint8_t stored = 0;
    layout.store_row(&word, &stored);
    EXPECT_EQ(stored, 239);
    // {3, 5, 255 ×8}: 3·5·255^7 ≈ 2^59.9 fills the first word (·255 more would pass 2^64); the
    // tenth column is the last word, one byte.
    std::vector<int> wide = {3, 5, 255, 255, 255, 255, 255, 255, 255, 255};
    const RowRadixLayout two(wide);
    EXPECT_EQ(two.words_per_row(), 2);
    EXPECT_EQ(two.row_bytes(), 9);
    // A word of 256^8 = 2^64 exactly holds the bytes themselves, first column in the high byte.
    const std::vector<int> bytes_levels(8, 256);
    const uint8_t b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    RowRadixLayout(bytes_levels).pack_row(b, &word);
    EXPECT_EQ(word, 0x0102030405060708ull);
  }

  std::mt19937 rng(3);
  std::uniform_int_distribution<int> pick(1, 256);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<int> lv(static_cast<size_t>(1 + trial * 7));
    for (auto& L : lv) L = trial % 3 == 0 ? pick(rng) : 1 + pick(rng) % 9;  // wide and narrow mixes
    const RowRadixLayout layout(lv);
    std::vector<uint8_t> codes(lv.size()), back(lv.size(), 0xEE);
    for (size_t j = 0; j < lv.size(); ++j) codes[j] = static_cast<uint8_t>(std::uniform_int_distribution<int>(0, lv[j] - 1)(rng));
    std::vector<uint64_t> words(static_cast<size_t>(layout.words_per_row()));
    layout.pack_row(codes.data(), words.data());
    layout.unpack_row(words.data(), back.data());
    ASSERT_EQ(back, codes) << "trial " << trial;
    double ideal = 0;
    for (int L : lv) ideal += std::log2(double(L));
    EXPECT_LT(64.0 * layout.words_per_row(), ideal + 64.0 + 8.0 * layout.words_per_row()) << "trial " << trial;
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
