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
  RowRadixLayout() : starts_{0} {}
  explicit RowRadixLayout(std::vector<int> levels);
  int64_t words_per_row() const { return static_cast<int64_t>(starts_.size()) - 1; }
  int64_t cols() const { return static_cast<int64_t>(levels_.size()); }
  const std::vector<int>& levels() const { return levels_; }
  const std::vector<int64_t>& starts() const { return starts_; }
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

#include "baq/quant.hpp"
#include "baq/tensor.hpp"

namespace baq {

// A quantized linear as stored: per-column level counts (L−1, omitted when uniform), F16 min and max
// per (row, group), F16 values of one-level columns, each column's group when act-order permuted
// them, and the row-wise mixed-radix code words.
struct PackedLinear {
  int64_t rows = 0, cols = 0;
  int n_groups = 1;
  int64_t group_size = 0;  // columns per group in natural order (when group_of is empty)
  bool sym = false;
  std::vector<int> levels;             // per column (kept expanded in memory)
  bool uniform = true;                 // every column has the same level count
  std::vector<uint16_t> lo, hi;        // rows × n_groups, F16 bits
  std::vector<uint16_t> means;         // F16 bits, one per one-level column, in column order
  std::vector<uint32_t> group_of;      // per column, only for act-order with groups
  std::vector<uint64_t> codes;         // rows × words_per_row
  int64_t group(int64_t col) const;

  // Decoding state derived from the above by prepare(): the row layout, and each column's grid as an
  // index into a row's table of grids, one per (group, distinct level count), fitted once per row.
  RowRadixLayout layout;
  std::vector<int> distinct_levels;
  std::vector<uint32_t> grid_index;  // per column: group · distinct_levels.size() + level count index
  std::vector<uint8_t> one_level;    // per column: 1 when it stores only its mean
  std::vector<float> column_value;   // one-level columns: their value; others 0
  void prepare();
};

// Decodes output rows [r0, r1) of a packed linear into `out` ((r1−r0) × cols floats), exactly the
// values dequantize() gives. The AVX2 and scalar variants give identical results; decode_rows picks
// AVX2 when the CPU has it.
void decode_rows(const PackedLinear& p, int64_t r0, int64_t r1, float* out);
void decode_rows_scalar(const PackedLinear& p, int64_t r0, int64_t r1, float* out);
void decode_rows_avx2(const PackedLinear& p, int64_t r0, int64_t r1, float* out);
bool cpu_has_avx2();

// out (rows_x × p.rows) = x (rows_x × p.cols) · Wᵀ with W decoded a tile of rows at a time: the
// weights are never expanded whole.
void packed_matmul(const float* x, int64_t rows_x, const PackedLinear& p, float* out);

// out (p.rows) = W · x for one input row (a generated token), fused: eight output rows decoded at once
// in AVX2 lanes (they share every column's level count and word boundaries) and dotted with x as they
// decode, nothing written but the sums. Without AVX2: rows decoded, then dotted.
void packed_matvec(const float* x, const PackedLinear& p, float* out);
// The same for output rows [r0, r1) only, on the calling thread (the fused path wants r0 and r1
// multiples of 8, or r1 the last row).
void packed_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out);

// The scale and zero of row r's grids, one per (group, distinct level count), at g·nd + d.
void fit_row_grids(const PackedLinear& p, int64_t r, float* scale, float* zero);

PackedLinear pack_linear(const QuantizedMatrix& m, const QuantSettings& s);

// Every stored bit of a packed linear, by part: exactly its .baq record less section padding.
struct StorageBits {
  double codes = 0;   // rows × 64-bit words of the row-wise mixed-radix layout
  double ranges = 0;  // per (row, group): F16 min and max
  double widths = 0;  // per column when levels differ: its level count (8 bits); act-order groups: its group (32)
  double means = 0;   // per one-level column: its F16 value
  double total() const { return codes + ranges + widths + means; }
};
StorageBits storage_bits(const PackedLinear& p);
// The F32 weights a packed linear stands for: bit-identical to the quantizer's dequantized values.
Tensor dequantize(const PackedLinear& p);

}  // namespace baq
