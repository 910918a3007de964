#include <cstring>

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
  // The last word's product P needs k bytes with P ≤ 2^8k: its fraction is kept to 8k bits, which
  // keeps the rounding error below 1/P (the exactness condition below).
  last_bytes_ = 0;
  if (words_per_row() > 0) {
    last_bytes_ = 1;
    while (last_bytes_ < 8 && product > (static_cast<unsigned __int128>(1) << (8 * last_bytes_))) ++last_bytes_;
  }
}

int64_t RowRadixLayout::row_bytes() const { return words_per_row() == 0 ? 0 : 8 * (words_per_row() - 1) + last_bytes_; }

void RowRadixLayout::store_row(const uint64_t* words, uint8_t* out) const {
  if (words_per_row() == 0) return;
  std::memcpy(out, words, static_cast<size_t>(8 * (words_per_row() - 1)));
  // The last word's low 8 − k bytes are zero by construction (little-endian: its top k bytes).
  std::memcpy(out + 8 * (words_per_row() - 1), reinterpret_cast<const uint8_t*>(words + words_per_row() - 1) + (8 - last_bytes_),
              static_cast<size_t>(last_bytes_));
}

void RowRadixLayout::load_row(const uint8_t* in, uint64_t* words) const {
  if (words_per_row() == 0) return;
  std::memcpy(words, in, static_cast<size_t>(8 * (words_per_row() - 1)));
  uint64_t last = 0;
  std::memcpy(reinterpret_cast<uint8_t*>(&last) + (8 - last_bytes_), in + 8 * (words_per_row() - 1), static_cast<size_t>(last_bytes_));
  words[words_per_row() - 1] = last;
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
    if (w + 1 == words_per_row() && last_bytes_ < 8) {
      // The last word to 8k bits: y' = ceil(v·2^8k / P) < 2^8k, placed in the word's top bytes.
      const int bits = 8 * last_bytes_;
      const auto y = static_cast<uint64_t>(((v << bits) + product - 1) / product);
      words[w] = y << (64 - bits);
    } else {
      words[w] = product == two64 ? static_cast<uint64_t>(v) : static_cast<uint64_t>(((v << 64) + product - 1) / product);
    }
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
