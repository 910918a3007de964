#include "baq/error.hpp"
#include "baq/pack.hpp"

namespace baq {

int mixed_radix_codes_per_word(int levels) {
  if (levels < 1 || levels > 256) fail("code packing: level count {} outside 1..256", levels);
  if (levels == 1) return 64;
  // Largest k with levels^k ≤ 2^64, by exact integer arithmetic (no floating-point log).
  int k = 0;
  unsigned __int128 p = 1;
  while (p * static_cast<unsigned>(levels) <= (static_cast<unsigned __int128>(1) << 64)) {
    p *= static_cast<unsigned>(levels);
    ++k;
  }
  return k;
}

RowRadixLayout::RowRadixLayout(std::vector<int> levels) : levels_(std::move(levels)) {
  const auto limit = static_cast<unsigned __int128>(1) << 64;
  unsigned __int128 product = 1;
  for (size_t j = 0; j < levels_.size(); ++j) {
    const int L = levels_[j];
    if (L < 1 || L > 256) fail("row packing: column {} has level count {} outside 1..256", j, L);
    if (L == 1) continue;  // no digit
    if (starts_.empty() || product * static_cast<unsigned>(L) > limit) {
      starts_.push_back(static_cast<int64_t>(j));
      product = 1;
    }
    product *= static_cast<unsigned>(L);
  }
  starts_.push_back(static_cast<int64_t>(levels_.size()));
}

// A word holds its segment's digits as a 64-bit fixed-point fraction y ≈ v / P (v the mixed-radix
// number, first column most significant; P the product of the segment's level counts), rounded up:
// y = ceil(v·2^64 / P). Then digit j is the high half of y·L_j and the low half is the rest, one
// multiplication per code instead of a division. Exact: with the rounding error δ < 2^-64 ≤ 1/P,
// each step keeps δ_k < 1/P_k for the remaining product P_k, which is what keeps every floor right.
void RowRadixLayout::pack_row(const uint8_t* codes, uint64_t* words) const {
  for (int64_t w = 0; w < words_per_row(); ++w) {
    unsigned __int128 v = 0, product = 1;
    for (int64_t j = starts_[w]; j < starts_[w + 1]; ++j)
      if (levels_[j] > 1) {
        v = v * static_cast<unsigned>(levels_[j]) + codes[j];
        product *= static_cast<unsigned>(levels_[j]);
      }
    const unsigned __int128 two64 = static_cast<unsigned __int128>(1) << 64;
    words[w] = product == two64 ? static_cast<uint64_t>(v) : static_cast<uint64_t>(((v << 64) + product - 1) / product);
  }
}

void RowRadixLayout::unpack_row(const uint64_t* words, uint8_t* codes) const {
  for (int64_t j = 0; j < (words_per_row() > 0 ? starts_[0] : cols()); ++j) codes[j] = 0;
  for (int64_t w = 0; w < words_per_row(); ++w) {
    uint64_t y = words[w];
    for (int64_t j = starts_[w]; j < starts_[w + 1]; ++j) {
      const unsigned __int128 t = static_cast<unsigned __int128>(y) * static_cast<unsigned>(levels_[j]);
      codes[j] = static_cast<uint8_t>(t >> 64);  // a one-level column multiplies by 1: digit 0, y unchanged
      y = static_cast<uint64_t>(t);
    }
  }
}

}  // namespace baq
