// Code packing: exact round trips for every level count 1..256 (so every width 1..8) and odd column
// lengths, word counts from the closed forms, and the space mixed radix saves over fixed width.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/pack.hpp"

namespace baq {
namespace {

TEST(CodePacking, RoundTripsEveryLevelCountAndOddLengths) {
  std::mt19937 rng(7);
  for (const CodePacking* p : {&fixed_width_packing(), &mixed_radix_packing()})
    for (int levels = 1; levels <= 256; ++levels)
      for (int64_t n : {1, 7, 63, 64, 65, 171, 173}) {
        std::vector<uint8_t> codes(static_cast<size_t>(n));
        std::uniform_int_distribution<int> d(0, levels - 1);
        for (auto& c : codes) c = static_cast<uint8_t>(d(rng));
        if (n > 2) codes[0] = static_cast<uint8_t>(levels - 1), codes[1] = 0;  // both extremes present
        std::vector<uint64_t> words(static_cast<size_t>(p->words(n, levels)));
        p->pack(codes, levels, words.data());
        std::vector<uint8_t> back(codes.size(), 0xAB);
        p->unpack(words.data(), levels, back);
        ASSERT_EQ(back, codes) << p->name << " levels " << levels << " n " << n;
      }
}

TEST(CodePacking, WordCountsAndBitsPerCode) {
  // Closed forms: k = ⌊64 / ceil(log2 L)⌋ (fixed) and max k with L^k ≤ 2^64 (mixed radix).
  EXPECT_EQ(fixed_width_codes_per_word(2), 64);
  EXPECT_EQ(fixed_width_codes_per_word(3), 32);
  EXPECT_EQ(fixed_width_codes_per_word(8), 21);
  EXPECT_EQ(fixed_width_codes_per_word(256), 8);
  EXPECT_EQ(mixed_radix_codes_per_word(2), 64);
  EXPECT_EQ(mixed_radix_codes_per_word(3), 40);   // 3^40 < 2^64 < 3^41
  EXPECT_EQ(mixed_radix_codes_per_word(5), 27);   // 5^27 < 2^64 < 5^28
  EXPECT_EQ(mixed_radix_codes_per_word(6), 24);
  EXPECT_EQ(mixed_radix_codes_per_word(16), 16);
  EXPECT_EQ(mixed_radix_codes_per_word(256), 8);
  for (int L = 2; L <= 256; ++L) {
    const int k = mixed_radix_codes_per_word(L);
    EXPECT_LE(k * std::log2(double(L)), 64.0 + 1e-9) << L;
    EXPECT_GT((k + 1) * std::log2(double(L)), 64.0 - 1e-9) << L;
    EXPECT_GE(k, fixed_width_codes_per_word(L)) << L;  // never worse than fixed width
  }
  EXPECT_EQ(mixed_radix_packing().words(173, 3), 5);  // ⌈173 / 40⌉
  EXPECT_EQ(fixed_width_packing().words(173, 3), 6);  // ⌈173 / 32⌉
  EXPECT_EQ(mixed_radix_packing().words(173, 1), 0);
  EXPECT_THROW(mixed_radix_packing().words(4, 0), Error);
  EXPECT_THROW(packing_by_name("zip"), Error);
}

TEST(RowRadixLayout, SegmentsAndRoundTrips) {
  EXPECT_EQ(RowRadixLayout(std::vector<int>(200, 3)).words_per_row(), 5);  // 40 ternary digits per word
  std::vector<int> levels(8, 256);
  levels.push_back(3);
  EXPECT_EQ(RowRadixLayout(levels).words_per_row(), 2);  // 256^8 = 2^64 fills a word exactly
  EXPECT_EQ(RowRadixLayout(std::vector<int>(9, 1)).words_per_row(), 0);
  EXPECT_THROW(RowRadixLayout({2, 257}), Error);

  // The stored word is ceil(v·2^64 / P) for v = d0·5 + d1 (first column most significant), P = 15:
  // codes (2, 4) -> v = 14; 14·2^64/15 = 17216961135462248174.93 -> 17216961135462248175.
  {
    const RowRadixLayout layout({3, 1, 5});
    const uint8_t codes[3] = {2, 0, 4};
    uint64_t word = 0;
    layout.pack_row(codes, &word);
    EXPECT_EQ(word, 17216961135462248175ull);
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

// The measurement behind the choice: mean bits per code over non-power-of-two level counts.
TEST(CodePacking, MixedRadixSavesOverFixedWidth) {
  double fixed = 0, radix = 0, ideal = 0;
  int n = 0;
  for (int L = 3; L <= 15; ++L) {
    if ((L & (L - 1)) == 0) continue;
    fixed += 64.0 / fixed_width_codes_per_word(L);
    radix += 64.0 / mixed_radix_codes_per_word(L);
    ideal += std::log2(double(L));
    ++n;
  }
  std::printf("mean bits per code over L = 3..15 (non powers of two): ideal %.3f, mixed radix %.3f, fixed %.3f\n",
              ideal / n, radix / n, fixed / n);
  EXPECT_LT(radix, 0.9 * fixed);
  EXPECT_LT(radix / n - ideal / n, 0.1);
}

}  // namespace
}  // namespace baq
