#include <cstring>
#include <utility>
#include <limits>

#include "baq/error.hpp"
#include "baq/pack.hpp"
#include "pack/code_layouts.hpp"

namespace baq {

namespace {

using u128 = unsigned __int128;
const u128 kTwo64 = static_cast<u128>(1) << 64;

// The fewest bits b with 2^b ≥ P, for 2 ≤ P ≤ 2^64: the bit length of P − 1.
int bits_for(u128 P) {
  const auto m = static_cast<uint64_t>(P - 1);  // < 2^64
  return 64 - __builtin_clzll(m);               // m ≥ 1
}

}  // namespace

int mixed_radix_codes_per_word(int levels) {
  if (levels < 1 || levels > 256) fail("code packing: level count {} outside 1..256", levels);
  if (levels == 1) return 64;
  // Largest k with levels^k ≤ 2^64, by exact integer arithmetic (no floating-point log).
  int k = 0;
  u128 p = 1;
  while (p * static_cast<unsigned>(levels) <= kTwo64) {
    p *= static_cast<unsigned>(levels);
    ++k;
  }
  return k;
}

uint64_t read_bits(const uint8_t* stream, int64_t bit, int n) {
  if (n == 0) return 0;
  const uint64_t top = radix_field(stream, bit, n);  // the field in the top n bits
  return n == 64 ? top : top >> (64 - n);
}

void write_bits(uint8_t* stream, int64_t bit, uint64_t value, int n) {
  if (n == 0) return;
  const auto nbytes = static_cast<size_t>(((bit & 7) + n + 7) / 8);
  const int shift = static_cast<int>(bit & 7);
  const u128 mask = ((n == 64 ? ~u128{0} >> 64 : (u128{1} << n) - 1)) << shift;
  u128 v = 0;
  std::memcpy(&v, stream + (bit >> 3), nbytes);
  v = (v & ~mask) | ((static_cast<u128>(value) << shift) & mask);
  std::memcpy(stream + (bit >> 3), &v, nbytes);
}

void copy_bits(uint8_t* dst, int64_t dst_bit, const uint8_t* src, int64_t src_bit, int64_t n) {
  for (int64_t done = 0; done < n; done += 56) {
    const int k = static_cast<int>(std::min<int64_t>(56, n - done));
    write_bits(dst, dst_bit + done, read_bits(src, src_bit + done, k), k);
  }
}

RowRadixLayout::RowRadixLayout(std::vector<int> levels) : levels_(std::move(levels)) {
  std::vector<int64_t> digit_col;  // columns that take a digit (more than one level)
  for (size_t j = 0; j < levels_.size(); ++j) {
    const int L = levels_[j];
    if (L < 1 || L > 256) fail("row packing: column {} has level count {} outside 1..256", j, L);
    if (L > 1) digit_col.push_back(static_cast<int64_t>(j));
  }
  // Where to cut the row into words: a word of product P is stored in ceil(log2 P) bits, so each
  // word wastes under one bit, and cutting greedily (fill each word to 2^64) can waste most of a bit
  // per word. The cuts that waste least over the whole row, found by dynamic programming over digit
  // prefixes (a word holds at most 64 digits), each word charged `charge` bits more than it stores:
  // the fused matvec loads every word of every row, and on BAQ-like rows (levels 3..15, 4096 wide) a
  // one-bit charge keeps the word count within 5 % of greedy filling (fewest stored bits alone: 15 %
  // more words) for 0.1 % of bits. Ties go to fewer words.
  const auto cutting = [&](int64_t charge) {
    const auto n = static_cast<int64_t>(digit_col.size());
    constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
    std::vector<int64_t> best_cost(static_cast<size_t>(n + 1), kNone), best_words(static_cast<size_t>(n + 1), kNone);
    std::vector<int64_t> cut(static_cast<size_t>(n + 1), 0);
    best_cost[0] = best_words[0] = 0;
    for (int64_t end = 1; end <= n; ++end) {
      u128 product = 1;
      for (int64_t begin = end - 1; begin >= 0; --begin) {
        product *= static_cast<unsigned>(levels_[static_cast<size_t>(digit_col[static_cast<size_t>(begin)])]);
        if (product > kTwo64) break;
        const int64_t cost = best_cost[static_cast<size_t>(begin)] + bits_for(product) + charge;
        const int64_t words = best_words[static_cast<size_t>(begin)] + 1;
        const auto e = static_cast<size_t>(end);
        if (cost < best_cost[e] || (cost == best_cost[e] && words < best_words[e])) {
          best_cost[e] = cost;
          best_words[e] = words;
          cut[e] = begin;
        }
      }
    }
    std::vector<int64_t> digit_starts;  // first digit of each word, last word first
    for (int64_t end = n; end > 0; end = cut[static_cast<size_t>(end)]) digit_starts.push_back(cut[static_cast<size_t>(end)]);
    return std::make_pair(best_cost[static_cast<size_t>(n)] - charge * static_cast<int64_t>(digit_starts.size()), digit_starts);
  };
  // The charge is dropped where it would cost more than 0.5 % of the row (short rows: a few words,
  // where a bit is a larger share and a word saved matters less).
  auto [bits, digit_starts] = cutting(1);
  if (const auto [fewest, starts] = cutting(0); 200 * (bits - fewest) > fewest) digit_starts = starts;
  starts_.clear();
  for (auto it = digit_starts.rbegin(); it != digit_starts.rend(); ++it) starts_.push_back(digit_col[static_cast<size_t>(*it)]);
  starts_.push_back(static_cast<int64_t>(levels_.size()));
  field_bits_.clear();
  field_offset_.clear();
  row_bits_ = 0;
  for (int64_t w = 0; w < words_per_row(); ++w) {
    u128 product = 1;
    for (int64_t j = starts_[static_cast<size_t>(w)]; j < starts_[static_cast<size_t>(w) + 1]; ++j) product *= static_cast<unsigned>(levels_[static_cast<size_t>(j)]);
    field_offset_.push_back(row_bits_);
    field_bits_.push_back(bits_for(product));
    row_bits_ += field_bits_.back();
  }
}

// A word holds its segment's digits as a fixed-point fraction y ≈ v / P (v the mixed-radix number,
// first column most significant; P the product of the segment's level counts) of b = ceil(log2 P)
// bits, rounded up: y = ceil(v·2^b / P), kept in memory in a 64-bit word's top b bits. Then digit j
// is the high half of y·L_j and the low half is the rest, one multiplication per code instead of a
// division. Exact: with the rounding error δ < 2^-b ≤ 1/P, each step keeps δ_k < 1/P_k for the
// remaining product P_k, which is what keeps every floor right. (So any b-bit field decodes to digits
// below their level counts: a stored row cannot hold an out-of-range code.)
void RowRadixLayout::pack_row(const uint8_t* codes, uint64_t* words) const {
  for (int64_t w = 0; w < words_per_row(); ++w) {
    u128 v = 0, product = 1;
    for (int64_t j = starts_[static_cast<size_t>(w)]; j < starts_[static_cast<size_t>(w) + 1]; ++j)
      if (levels_[static_cast<size_t>(j)] > 1) {
        v = v * static_cast<unsigned>(levels_[static_cast<size_t>(j)]) + codes[j];
        product *= static_cast<unsigned>(levels_[static_cast<size_t>(j)]);
      }
    const int b = field_bits_[static_cast<size_t>(w)];
    // v < P ≤ 2^b ≤ 2^64: v·2^b + P − 1 < 2^128.
    const auto y = static_cast<uint64_t>(((v << b) + product - 1) / product);
    words[w] = b == 64 ? y : y << (64 - b);
  }
}

void RowRadixLayout::unpack_row(const uint64_t* words, uint8_t* codes) const {
  for (int64_t j = 0; j < (words_per_row() > 0 ? starts_[0] : cols()); ++j) codes[j] = 0;
  for (int64_t w = 0; w < words_per_row(); ++w) {
    uint64_t y = words[w];
    for (int64_t j = starts_[static_cast<size_t>(w)]; j < starts_[static_cast<size_t>(w) + 1]; ++j) {
      const u128 t = static_cast<u128>(y) * static_cast<unsigned>(levels_[static_cast<size_t>(j)]);
      codes[j] = static_cast<uint8_t>(t >> 64);  // a one-level column multiplies by 1: digit 0, y unchanged
      y = static_cast<uint64_t>(t);
    }
  }
}

void RowRadixLayout::store_row(const uint64_t* words, uint8_t* stream, int64_t bit) const {
  for (int64_t w = 0; w < words_per_row(); ++w) {
    const int b = field_bits_[static_cast<size_t>(w)];
    write_bits(stream, bit + field_offset_[static_cast<size_t>(w)], b == 64 ? words[w] : words[w] >> (64 - b), b);
  }
}

void RowRadixLayout::load_row(const uint8_t* stream, int64_t bit, uint64_t* words) const {
  for (int64_t w = 0; w < words_per_row(); ++w)
    words[w] = radix_field(stream, bit + field_offset_[static_cast<size_t>(w)], field_bits_[static_cast<size_t>(w)]);
}

}  // namespace baq
