#pragma once
// Quantized linears as stored, and the kernels that use them without expanding them.
//
// A format is a row of one table (quant_formats()): how each (row, group)'s range is stored (F16, or
// 8-bit fractions of a superblock's F16 range) and how codes are laid out along a row —
//   radix  — mixed radix in words of up to 64 bits, any level count per column (BAQ's allocations);
//   planes — bit planes of widths 4/2/1 (b = 3 is a 2-bit plane and a 1-bit plane), every column
//            2^b levels, byte-granular so a row wastes under a byte per plane, decoded by shifts in
//            SIMD lanes: the fast layout for uniform bits.
// The solver rounds ranges as the row stores them (QuantSettings::ranges), pack_linear picks the row,
// the .baq file stores its sections and the kernels use its decode and fused matvec. Every stored bit
// is counted (storage_bits).
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "baq/quant.hpp"
#include "baq/tensor.hpp"

namespace baq {

// Mixed radix along a row: consecutive columns share a word, one base-L_j digit each (one-level
// columns take no space), while the product P of their level counts fits in 64 bits; a word is stored
// as a field of ceil(log2 P) bits, and where the row is cut into words is chosen to waste the fewest
// bits (a word counted as one bit more: fewer words decode faster). Rows follow each other bit by bit
// (row r starts at bit r·row_bits()): a row costs Σ_j log2 L_j bits plus under a bit per word,
// whatever its length. The segmentation depends only on the levels,
// so every row of a tensor shares it, and decoding walks the row as a matmul does.
class RowRadixLayout {
 public:
  RowRadixLayout() : starts_{0} {}
  explicit RowRadixLayout(std::vector<int> levels);
  int64_t words_per_row() const { return static_cast<int64_t>(starts_.size()) - 1; }
  int64_t cols() const { return static_cast<int64_t>(levels_.size()); }
  const std::vector<int>& levels() const { return levels_; }
  const std::vector<int64_t>& starts() const { return starts_; }
  // Words in memory are 64-bit fixed-point fractions (a field in the top bits).
  void pack_row(const uint8_t* codes, uint64_t* words) const;
  void unpack_row(const uint64_t* words, uint8_t* codes) const;
  // A row as stored: each word's field, in order, from bit `bit` of a little-endian bit stream.
  // load_row reads 16 bytes from each field's first byte: the stream must be readable 16 bytes
  // past the row's end.
  const std::vector<int64_t>& field_offsets() const { return field_offset_; }  // bit of each word's field in a row
  const std::vector<int>& field_bits() const { return field_bits_; }
  int64_t row_bits() const { return row_bits_; }
  void store_row(const uint64_t* words, uint8_t* stream, int64_t bit) const;
  void load_row(const uint8_t* stream, int64_t bit, uint64_t* words) const;

 private:
  std::vector<int> levels_;
  std::vector<int64_t> starts_;        // column where each word starts, then cols()
  std::vector<int> field_bits_;        // bits each word is stored in
  std::vector<int64_t> field_offset_;  // bit where each word's field starts within the row
  int64_t row_bits_ = 0;
};

// Bits of a little-endian bit stream (bit k is bit k % 8 of byte k / 8): n ≤ 64 bits from `bit`;
// write_bits leaves the stream's other bits as they were. read_bits (and copy_bits' source) reads 16
// bytes from the first byte, as load_row does: the stream must be readable 16 bytes past the bits.
uint64_t read_bits(const uint8_t* stream, int64_t bit, int n);
void write_bits(uint8_t* stream, int64_t bit, uint64_t value, int n);
void copy_bits(uint8_t* dst, int64_t dst_bit, const uint8_t* src, int64_t src_bit, int64_t n);

// Codes per 64-bit word: the largest k with levels^k ≤ 2^64.
int mixed_radix_codes_per_word(int levels);

enum class CodeKind { Radix, Planes };
// Bytes a code stream of `rows` rows of `row_bits` bits is stored in (rows back to back, to whole bytes).
inline int64_t code_stream_bytes(int64_t rows, int64_t row_bits) { return (rows * row_bits + 7) / 8; }
struct PackedLinear;

struct QuantFormat {
  std::string name;  // "f16-radix", "f16-planes", "scaled8-radix", "scaled8-planes"
  RangeKind ranges;
  CodeKind codes;
  // Whether the layout can hold these level counts (planes: every column 2^b levels, groups in order).
  bool (*accepts)(const std::vector<int>& levels, bool natural_groups);
  // Bits one row's codes take, once the linear's levels are set (row r's start at bit r·row_bits).
  int64_t (*row_bits)(const PackedLinear& p);
  // Row r's codes into the linear's code stream, and back.
  void (*pack_row)(PackedLinear& p, int64_t r, const uint8_t* codes);
  void (*unpack_row)(const PackedLinear& p, int64_t r, uint8_t* codes);
  // out[r] = row r · x for rows [r0, r1) (r0 and r1 multiples of 8, or r1 = rows), fused: nothing but
  // the sums is written.
  void (*matvec_rows)(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out);
  // Rows [r0, r1) decoded to F32 ((r1−r0) × cols), bit for bit what decode_rows gives, by the layout's
  // own fast path: false (or no function) where it has none for this linear or CPU.
  bool (*decode_rows)(const PackedLinear& p, int64_t r0, int64_t r1, float* out);
};
const std::vector<QuantFormat>& quant_formats();
const QuantFormat& quant_format(RangeKind ranges, CodeKind codes);
const QuantFormat& quant_format_named(const std::string& name);

// A quantized linear as stored: its format, per-column level counts (stored when they differ), the
// ranges of every (row, group), F16 values of one-level columns, each column's group when act-order
// permuted them, and each row's codes.
struct PackedLinear {
  int64_t rows = 0, cols = 0;
  int n_groups = 1;
  int64_t group_size = 0;  // columns per group in natural order (when group_of is empty)
  bool sym = false;
  const QuantFormat* format = nullptr;
  std::vector<int> levels;             // per column (kept expanded in memory)
  bool uniform = true;                 // every column has the same level count
  int super_groups = 1;                // Scaled8: groups per superblock
  std::vector<uint16_t> lo, hi;        // F16 bits: rows × n_groups (F16) or rows × superblocks (Scaled8)
  std::vector<uint8_t> qlo, qhi;       // Scaled8: rows × n_groups fractions of the superblock's bounds
  std::vector<uint16_t> means;         // F16 bits, one per one-level column, in column order
  std::vector<uint32_t> group_of;      // per column, only for act-order with groups
  int64_t row_bits = 0;                // codes of one row
  std::vector<uint64_t> code_words;    // the code stream: rows × row_bits bits, then zero padding for SIMD over-reads
  int64_t code_bytes() const { return code_stream_bytes(rows, row_bits); }  // the stream as stored
  const uint8_t* codes() const { return reinterpret_cast<const uint8_t*>(code_words.data()); }
  uint8_t* codes() { return reinterpret_cast<uint8_t*>(code_words.data()); }
  // Row r's first byte, for layouts whose rows are whole bytes (planes).
  const uint8_t* row_codes(int64_t r) const { return codes() + r * (row_bits / 8); }
  uint8_t* row_codes(int64_t r) { return codes() + r * (row_bits / 8); }
  int64_t group(int64_t col) const;
  int n_super() const { return (n_groups + super_groups - 1) / super_groups; }
  // The stored range of (row, group) as the solver quantized with it.
  void range(int64_t r, int64_t g, float& lo, float& hi) const;
  // Sizes the code buffer for rows × row_bits (row_bits is set by prepare()).
  void allocate_codes();

  // Decoding state derived from the above by prepare(): the radix row layout or the plane widths,
  // and each column's grid as an index into a row's table of grids, one per (group, distinct level
  // count), fitted once per row.
  RowRadixLayout layout;
  std::vector<int> plane_bits;       // planes: widths, first plane lowest bits
  std::vector<int> distinct_levels;
  std::vector<uint32_t> grid_index;  // per column: group · distinct_levels.size() + level count index
  std::vector<uint8_t> one_level;    // per column: 1 when it stores only its mean
  std::vector<float> column_value;   // one-level columns: their value; others 0
  // Each row's grids fitted once here rather than per token: planes always (rows × n_groups); radix
  // (rows × n_groups × distinct level counts, fit_row_grids' order) when they take no more bytes
  // than the row's codes (per-row grids of wide rows: a few percent), else fitted per token (fitting
  // was a fifth of a kdoc-6.8M BAQ token; prepared, that model generates 28 % faster). A
  // grid's zero is a whole level index (0..255), kept in a byte: generation reads these beside the
  // codes, and F32 zeros were a fifth of a 2-bit row's bytes at 128-column groups.
  std::vector<float> row_scale;
  std::vector<uint8_t> row_zero;
  void prepare();
  // Radix codes (BAQ's mixed level counts) again as uniform b-bit planes, b for the largest level
  // count, for the AVX-512 VNNI kernel, which runs them 5–15× faster than the radix tiles decode
  // them: a grid's scale is its (row, group)'s range D over L − 1 (fit_grid), so with x'_j =
  // x_j/(L_j − 1) a row's product is Σ_g D_g·Σ_{j∈g} code_j·x'_j − Σ_{g,L} D_g·zero_gL·Σ_{j∈g, L_j=L} x'_j
  // plus the one-level columns' share. The twin's grids are the D (its zeros 0); column_factor holds
  // 1/(L_j − 1) (0 for one-level columns). Built by prepare_fused() once the codes are in place, under
  // set_radix_twins(true), where the CPU has VNNI, groups are natural whole 64-column runs and a row's
  // grids are few beside its columns; else null, and the radix tiles run.
  std::shared_ptr<const PackedLinear> planes_twin;
  std::vector<float> column_factor;
  uint64_t twin_serial = 0;  // unique to this twin in the process: the kernel's per-thread input cache keys on it
  void prepare_fused();
  // Bytes held in memory for decoding: the code stream, the prepared grids and the planes twin.
  double held_bytes() const {
    return static_cast<double>(code_bytes()) + 4.0 * static_cast<double>(row_scale.size()) + static_cast<double>(row_zero.size()) +
           (planes_twin ? planes_twin->held_bytes() + 4.0 * static_cast<double>(column_factor.size()) : 0.0);
  }
};

// Decodes output rows [r0, r1) of a packed linear into `out` ((r1−r0) × cols floats), exactly the
// values dequantize() gives. The AVX2 and scalar variants give identical results; decode_rows picks
// AVX2 when the CPU has it.
void decode_rows(const PackedLinear& p, int64_t r0, int64_t r1, float* out);
void decode_rows_scalar(const PackedLinear& p, int64_t r0, int64_t r1, float* out);
void decode_rows_avx2(const PackedLinear& p, int64_t r0, int64_t r1, float* out);
bool cpu_has_avx2();

// The widest instruction set the packed kernels may use: the best the CPU has by default; tests lower
// it to check that every path computes the same. Avx512Vnni multiplies bit-plane codes by the input
// rounded to integers per segment of columns, with a step per quarter of the segment's lanes: to 16
// bits (step ≤ max|x|/32512, two int8 halves; segments up to 512 columns) by default, or to 8 bits
// (step ≤ max|x|/127, segments up to 128 columns, llama.cpp's choice for its k-quants) when
// set_fused_input_bits(8) — one product per 64 weights instead of two, at a measured cost in damage
// (README). The error of a dot is at most Σ_j |w_j|·step/2. Every other level multiplies in F32.
enum class KernelIsa { Avx512Vnni, Avx512, Avx2, Scalar };
void limit_kernel_isa(KernelIsa isa);
KernelIsa kernel_isa();
void set_fused_input_bits(int bits);  // 16 or 8
int fused_input_bits();
// Whether packed_matmul runs every batch, however long, through the fused product (8-bit inputs,
// so that perplexity measures what generation computes); else only batches up to kFusedBatch.
bool every_batch_fused();
// Whether packing and loading also build radix linears' planes twins (PackedLinear::planes_twin):
// worth their memory only where the fused product runs every token — generation, and perplexity at
// 8-bit inputs. Off unless a command turns it on before it loads or packs.
void set_radix_twins(bool on);
bool radix_twins();

// out (rows_x × p.rows) = x (rows_x × p.cols) · Wᵀ: up to kFusedBatch rows of x by the fused matvec
// (the same sums as generating them one by one), more by matmul_converted_rows (W decoded a panel of
// rows at a time): the weights are never expanded whole. With 8-bit fused inputs every batch takes
// the fused product, so that perplexity measures what generation computes.
constexpr int64_t kFusedBatch = 128;
void packed_matmul(const float* x, int64_t rows_x, const PackedLinear& p, float* out);

// out (p.rows) = W · x for one input row (a generated token), through the format's fused matvec.
void packed_matvec(const float* x, const PackedLinear& p, float* out);
// The same for output rows [r0, r1) only, on the calling thread (r0 and r1 multiples of 8, or r1 the
// last row).
void packed_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out);

// While alive, promises that x is not written on any thread: products on the calling thread then
// know the input they prepared from x (its rounding, its group sums) by x's address instead of
// comparing x with their copy on every call (a 64-row task of a 5632-wide product compared 22 KB).
// matvec teams hold one per product; without one, every call compares. A batch (count inputs,
// `stride` floats apart from x) is promised the same way, and each of its inputs keeps its own
// preparation on the thread.
class SteadyInput {
 public:
  explicit SteadyInput(const float* x, int64_t count = 1, int64_t stride = 0);
  ~SteadyInput();
  SteadyInput(const SteadyInput&) = delete;
  SteadyInput& operator=(const SteadyInput&) = delete;
};

// The scale and zero of row r's grids, one per (group, distinct level count), at g·nd + d.
void fit_row_grids(const PackedLinear& p, int64_t r, float* scale, float* zero);

// Packs a quantized matrix in the densest format that holds it: planes when every column has the same
// power-of-two level count and groups are in column order, else mixed radix; ranges as it was solved.
PackedLinear pack_linear(const QuantizedMatrix& m, const QuantSettings& s);

// The rows of `parts` (in order) as one packed linear: slices of one matrix quantized with the same
// settings and levels (rows are independent under RTN and GPTQ), so a large matrix never needs to be
// in F32 whole.
PackedLinear concat_rows(std::vector<PackedLinear> parts);

// Every stored bit of a packed linear, by part: exactly its .baq record less section padding.
struct StorageBits {
  double codes = 0;   // the code stream: rows × the format's bits per row, to whole bytes
  double ranges = 0;  // F16 bounds per (row, group), or 8-bit fractions per group + F16 bounds per superblock
  double widths = 0;  // per column when levels differ: its level count (8 bits); act-order groups: its group (32)
  double means = 0;   // per one-level column: its F16 value
  double total() const { return codes + ranges + widths + means; }
  StorageBits& operator+=(const StorageBits& o) {
    codes += o.codes, ranges += o.ranges, widths += o.widths, means += o.means;
    return *this;
  }
};
StorageBits storage_bits(const PackedLinear& p);
// What pack_linear will store for a rows × levels.size() matrix quantized with these level counts and
// settings, known before solving (the same format choice, row bytes and range count).
StorageBits planned_storage(const std::vector<int>& levels, int64_t rows, const QuantSettings& s);

// Uniform-bit settings for a `rows × cols` matrix whose stored bits per weight (codes, ranges,
// everything) meet `bpw` from below: the most code bits that fit, then the finest groups (F16 or
// Scaled8 ranges) the rest of the budget buys. `base` supplies the solver's other settings. Fails
// when not even 2 bits with one range per row fit.
QuantSettings uniform_settings_for_bpw(double bpw, int64_t rows, int64_t cols, const QuantSettings& base);
// The same, or nothing when no uniform grid fits (BAQ can still go below: fewer than 4 levels).
std::optional<QuantSettings> uniform_settings_within(double bpw, int64_t rows, int64_t cols, const QuantSettings& base);
// The F32 weights a packed linear stands for: bit-identical to the quantizer's dequantized values.
Tensor dequantize(const PackedLinear& p);

}  // namespace baq
