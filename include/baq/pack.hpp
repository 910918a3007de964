#pragma once
// Integer codes of one column (each < L, for any level count L ≥ 1) packed into 64-bit words.
// A format is a row in a table of (name, bits per column, pack, unpack), as ggml's type traits.
//   fixed      — ceil(log2 L) bits per code, codes never straddle a word;
//   mixed-radix — k = ⌊64 / log2 L⌋ codes per word as one base-L number: 1.60 bits for L = 3,
//                 2.37 for L = 5, 2.67 for L = 6, where fixed width spends 2, 3 and 3.
// L = 1 stores nothing. Both are exact round trips; baq writes mixed-radix.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace baq {

struct CodePacking {
  const char* name;
  // Words a column of `n` codes with `levels` levels takes.
  int64_t (*words)(int64_t n, int levels);
  void (*pack)(std::span<const uint8_t> codes, int levels, uint64_t* out);
  void (*unpack)(const uint64_t* words, int levels, std::span<uint8_t> codes);
};

// Mixed radix along a row, the layout baq stores: consecutive columns share a 64-bit word while the
// product of their level counts fits in 64 bits, one base-L_j digit each (one-level columns take no
// space). The segmentation depends only on the levels, so every row of a tensor shares it; a row
// costs about Σ_j log2 L_j bits whatever its length, and decoding walks the row as a matmul does.
class RowRadixLayout {
 public:
  explicit RowRadixLayout(std::vector<int> levels);
  int64_t words_per_row() const { return static_cast<int64_t>(starts_.size()) - 1; }
  int64_t cols() const { return static_cast<int64_t>(levels_.size()); }
  void pack_row(const uint8_t* codes, uint64_t* words) const;
  void unpack_row(const uint64_t* words, uint8_t* codes) const;

 private:
  std::vector<int> levels_;
  std::vector<int64_t> starts_;  // column where each word starts, then cols()
};

const CodePacking& fixed_width_packing();
const CodePacking& mixed_radix_packing();
const CodePacking& packing_by_name(const std::string& name);

// Codes per 64-bit word: the largest k with levels^k ≤ 2^64 (mixed radix), or ⌊64 / ceil(log2 L)⌋.
int mixed_radix_codes_per_word(int levels);
int fixed_width_codes_per_word(int levels);

}  // namespace baq
