#pragma once
// Pure numerics on matrices: uniform grids, round-to-nearest and GPTQ. No file I/O, no model
// knowledge — every function here works on a plain weight matrix W (rows = outputs, columns =
// inputs) and, for GPTQ, the layer's Hessian proxy H = 2·X·Xᵀ/n (columns × columns).
#include <cstdint>
#include <string>
#include <vector>

namespace baq {

struct QuantSettings {
  int bits = 4;         // 2..8: 2^bits levels per column
  int group_size = 0;   // 0 = one grid per output row; else per row and per group of input columns
  bool sym = false;     // symmetric grid (no stored zero point)
  double damp = 0.01;   // GPTQ damping as a fraction of mean(diag H)
  int block_size = 128; // GPTQ lazy-batch width
  bool act_order = false;
  int max_damp_retries = 6;  // damping ×10 per retry when H + λI is not positive definite
};

// The asymmetric (or symmetric) min-max grid of one row over a set of columns, GPTQ's convention:
// the range always includes 0, and an all-zero range becomes [-1, 1].
struct GridParams {
  float scale = 1.0f;
  float zero = 0.0f;
  int maxq = 15;
  int code(float x) const;          // nearest level index in [0, maxq]
  float value(int code) const { return scale * (static_cast<float>(code) - zero); }
};
GridParams fit_grid(float xmin, float xmax, int maxq, bool sym);

// A quantized matrix: integer codes and the grid of every (row, group), dequantized values, and the
// per-column losses GPTQ measures (ℓ_j = Σ_rows (w−q)² / U_jj², zero for RTN).
struct QuantizedMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> dequant;       // rows × cols
  std::vector<uint8_t> codes;       // rows × cols
  std::vector<GridParams> grids;    // rows × n_groups
  std::vector<int32_t> group_of;    // per column: its group index (act-order may permute groups)
  int n_groups = 1;
  std::vector<double> column_loss;  // per column, original order
  double loss = 0.0;                // Σ column_loss
  double damp = 0.0;                // damping λ actually added to the Hessian
  int damp_retries = 0;
};

// Bits per weight of a grid layout: code bits + per (row, group) an F16 scale and, for asymmetric
// grids, a zero point stored with the code width.
double storage_bits_per_weight(const QuantSettings& s, int64_t rows, int64_t cols);

QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSettings& s);

// GPTQ (Frantar et al. 2022) with lazy batch updates. `h` is the undamped Hessian (cols × cols,
// row-major, double); it is not modified. Throws baq::Error naming `name` if no damping up to the
// retry bound makes it positive definite, or if W or H hold NaN/Inf.
QuantizedMatrix quantize_gptq(const float* w, int64_t rows, int64_t cols, const double* h, const QuantSettings& s,
                              const std::string& name = "layer");

// tr((W−Q) H (W−Q)ᵀ): the layer-output error the quantizers minimise.
double proxy_loss(const float* w, const float* q, int64_t rows, int64_t cols, const double* h);

}  // namespace baq
