#pragma once
// Pure numerics on matrices: uniform grids, round-to-nearest and GPTQ. No file I/O, no model
// knowledge — every function here works on a plain weight matrix W (rows = outputs, columns =
// inputs) and, for GPTQ, the layer's Hessian proxy H = 2·X·Xᵀ/n (columns × columns).
#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace baq {

// How each (row, group)'s value range [lo, hi] is stored: two F16 numbers, or two 8-bit fractions of
// its superblock's F16 range (k-quant-like: a few groups share one F16 pair, each group pays 16 bits).
enum class RangeKind { F16, Scaled8 };
const char* range_kind_name(RangeKind kind);
RangeKind parse_range_kind(const std::string& name);

struct QuantSettings {
  int bits = 4;         // 2..8: 2^bits levels per column
  int group_size = 0;   // 0 = one grid per output row; else per row and per group of input columns
  RangeKind ranges = RangeKind::F16;
  int super_groups = 8;  // Scaled8: groups per superblock (sharing one F16 range)
  bool sym = false;     // symmetric grid (no stored zero point)
  double damp = 0.01;   // GPTQ damping as a fraction of mean(diag H)
  int block_size = 128; // GPTQ lazy-batch width
  bool act_order = false;
  bool clip_search = false;  // GPTQ: each grid's range chosen among shrunk min-max ranges by |error|^2.4
  // BAQ's column coefficients c_j: measured in GPTQ's visiting order (ℓ_j·L², the paper's), or
  // order-invariant (Σ(w−q)²/[H⁻¹]_jj·L²: each column weighted as if every other one absorbed its
  // error, so late columns are not favoured); then shrunk toward the layer's geometric mean by
  // `baq_shrink` in log space (0: as measured, 1: uniform), so the allocation follows what the
  // calibration text shows strongly, not every fluctuation of it.
  bool baq_order_invariant = true;
  double baq_shrink = 0.5;
  int max_damp_retries = 6;  // damping ×10 per retry when H + λI is not positive definite
};

// The asymmetric (or symmetric) min-max grid of one row over a set of columns, GPTQ's convention:
// the range always includes 0, and an all-zero range becomes [-1, 1].
struct GridParams {
  float scale = 1.0f;
  float zero = 0.0f;
  int maxq = 15;
  int code(float x) const { return static_cast<int>(code_value(x)); }  // nearest level index in [0, maxq]
  // The code as a float: x/scale rounded half to even (nearbyint's rounding, by adding and
  // subtracting 1.5·2^23, which is exact for |x/scale| < 2^22 and clamps the same beyond; no libm
  // call, so loops over it vectorize), plus zero, clamped.
  float code_value(float x) const {
    constexpr float kRound = 12582912.0f;  // 1.5 · 2^23
    const float c = ((x / scale + kRound) - kRound) + zero;
    return std::min(std::max(c, 0.0f), static_cast<float>(maxq));
  }
  float value(int code) const { return scale * (static_cast<float>(code) - zero); }
};
GridParams fit_grid(float xmin, float xmax, int maxq, bool sym);

// Scaled8: a bound stored as an 8-bit fraction q/255 of its superblock's bound (the same two IEEE
// operations wherever it is computed, so solver, file and kernels agree to the bit).
inline float scaled8_value(float super_bound, uint8_t q) { return super_bound * static_cast<float>(q) / 255.0f; }
// The superblock bounds as stored: min(x, 0) and max(x, 0) of its values, rounded to F16.
void superblock_bounds(float xmin, float xmax, float& super_lo, float& super_hi);
// A group's [lo, hi] as stored under `kind` (Scaled8 also gives its two 8-bit fractions).
struct StoredRange {
  float lo = 0, hi = 0;
  uint8_t qlo = 0, qhi = 0;
};
StoredRange store_range(RangeKind kind, float lo, float hi, float super_lo, float super_hi);

// A quantized matrix: integer codes, the value range of every (row, group) and the level count of
// every column — column j of row r uses the grid fit_grid(lo, hi, levels[j] − 1) of its group, and a
// one-level column holds its mean — dequantized values, and the per-column losses GPTQ measures
// (ℓ_j = Σ_rows (w−q)² / U_jj², zero for RTN).
struct QuantizedMatrix {
  int64_t rows = 0, cols = 0;
  bool sym = false;
  std::vector<float> dequant;       // rows × cols
  std::vector<uint8_t> codes;       // rows × cols (0 for one-level columns)
  std::vector<float> lo, hi;        // rows × n_groups: min and max of the row's group, as stored
  RangeKind ranges = RangeKind::F16;
  int super_groups = 1;             // Scaled8: groups per superblock
  std::vector<float> super_lo, super_hi;  // Scaled8: rows × superblocks, F16 values
  std::vector<uint8_t> qlo, qhi;          // Scaled8: rows × n_groups
  std::vector<int> levels;          // per column, ≥ 1
  std::vector<float> column_mean;   // per column: the stored value of a one-level column
  std::vector<int32_t> group_of;    // per column: its group index (act-order may permute groups)
  int n_groups = 1;
  GridParams grid(int64_t row, int64_t col) const;
  std::vector<double> column_loss;  // per column, original order
  // Per column: Σ_rows (w−q)² as rounded, and 1/[H⁻¹]_jj — the loss weight the column would have with
  // every other column left to absorb its error, whatever the order GPTQ visits it in (GPTQ given
  // level counts with baq_order_invariant, as BAQ's passes are: it costs the inverse's diagonal,
  // n³/3; zero otherwise).
  std::vector<double> column_sq_error, column_weight;
  double loss = 0.0;                // Σ column_loss
  double damp = 0.0;                // damping λ actually added to the Hessian
  int damp_retries = 0;
  // tr((W−Q) H (W−Q)ᵀ) for the undamped H when the solver knows it without another product (GPTQ:
  // from its own losses), else −1 (RTN: proxy_loss() computes it).
  double proxy_loss = -1.0;
};


QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSettings& s);

// GPTQ (Frantar et al. 2022) with lazy batch updates. `h` is the undamped Hessian (cols × cols,
// row-major, double); it is not modified. Throws baq::Error naming `name` if no damping up to the
// retry bound makes it positive definite, or if W or H hold NaN/Inf.
// `levels` (per column, ≥ 1, ≤ 256), when given, replaces the uniform 2^bits levels: BAQ's pass 2.
QuantizedMatrix quantize_gptq(const float* w, int64_t rows, int64_t cols, const double* h, const QuantSettings& s,
                              const std::string& name = "layer", const std::vector<int>* levels = nullptr);

// quantize_gptq keeps the inverse-Hessian factor of its last Hessian (n² floats) for the next call
// with the same Hessian and settings (q/k/v and gate/up share one; BAQ solves a linear two or three
// times); this frees it (the quantizer calls it when a Hessian's last reader is done).
void release_gptq_factor_cache();

// tr((W−Q) H (W−Q)ᵀ): the layer-output error the quantizers minimise (2·rows·cols² FLOPs).
double proxy_loss(const float* w, const float* q, int64_t rows, int64_t cols, const double* h);
// The same, from the solver's own number when it has one (QuantizedMatrix::proxy_loss).
double proxy_loss(const float* w, const QuantizedMatrix& q, const double* h);
// d_r H d_rᵀ for each row of a rows × cols matrix D given a block of rows at a time by d_rows
// (row-major into dst, called in order, several times over), into per_row.
void row_quadratic_forms(int64_t rows, int64_t cols, const double* h,
                         const std::function<void(int64_t r0, int64_t r1, float* dst)>& d_rows, double* per_row);

}  // namespace baq

namespace baq {


// BAQ's loss model fitted from a uniform pass: ℓ_j = c_j·2^(−2R) with R = log2 L, so c_j = ℓ_j·L².
std::vector<double> loss_coefficients(const std::vector<double>& column_loss, int uniform_levels);
// Shrinks coefficients toward their geometric mean in log space: c_j ← c_j^(1−λ)·geomean(c)^λ.
void shrink_coefficients(std::vector<double>& c, double lambda);
// The coefficients BAQ allocates with, from a uniform GPTQ pass at `uniform_levels`: the paper's
// ℓ_j·L², or (QuantSettings::baq_order_invariant) Σ(w−q)²/[H⁻¹]_jj·L², shrunk by baq_shrink.
std::vector<double> baq_coefficients(const QuantizedMatrix& pass1, int uniform_levels, const QuantSettings& s);
// The uniform level count BAQ's first pass measures at: round(2^R̄), at least 2.
int measurement_levels(double rate);
// GPTQ's `loss` after allocation over the uniform pass's `uniform_loss`, the latter moved by the loss
// model from its measurement rate (log2 `uniform_levels`) to the budget `rate` (2^(−2ΔR)): what the
// predicted loss ratio is compared with. 1 when there is no uniform loss.
double measured_loss_ratio(double loss, double uniform_loss, int uniform_levels, double rate);

struct BaqLayerResult {
  QuantizedMatrix quantized;  // pass 2, per-column grids
  std::vector<int> levels;
  double loss_before = 0;     // pass 1 (uniform): Σ ℓ_j
  double predicted_loss_ratio = 1;
  double measured_loss_ratio = 1;  // measured_loss_ratio() of pass 2 against pass 1
};
// BAQ on one layer: GPTQ at the uniform rate, closed-form allocation at mean rate `rate` (bits per
// weight of codes, fractional, at most 8), GPTQ again with the allocated grids.
// With `stored_bpw` (what a set of levels costs as stored, per weight: codes with their packing,
// ranges, widths), `rate` is a budget in those stored bits instead: the code-bit budget is lowered
// until the allocation's stored cost meets it from below.
BaqLayerResult quantize_baq(const float* w, int64_t rows, int64_t cols, const double* h, const QuantSettings& s,
                            double rate, const std::string& name = "layer",
                            const std::function<double(const std::vector<int>&)>& stored_bpw = {});

}  // namespace baq
