#include "baq/error.hpp"
#include "baq/pack.hpp"

namespace baq {

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

void RowRadixLayout::pack_row(const uint8_t* codes, uint64_t* words) const {
  for (int64_t w = 0; w < words_per_row(); ++w) {
    uint64_t v = 0;
    // Horner from the segment's last column: its first column is the lowest digit.
    for (int64_t j = starts_[w + 1]; j-- > starts_[w];)
      if (levels_[j] > 1) v = v * static_cast<uint64_t>(levels_[j]) + codes[j];
    words[w] = v;
  }
}

void RowRadixLayout::unpack_row(const uint64_t* words, uint8_t* codes) const {
  for (int64_t j = 0; j < (words_per_row() > 0 ? starts_[0] : cols()); ++j) codes[j] = 0;
  for (int64_t w = 0; w < words_per_row(); ++w) {
    uint64_t v = words[w];
    for (int64_t j = starts_[w]; j < starts_[w + 1]; ++j) {
      const auto L = static_cast<uint64_t>(levels_[j]);
      if (L == 1) {
        codes[j] = 0;
      } else {
        codes[j] = static_cast<uint8_t>(v % L);
        v /= L;
      }
    }
  }
}

}  // namespace baq
