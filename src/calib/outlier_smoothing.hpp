#pragma once
// Activation outliers (a few input channels tens of times larger than the rest, as real LLMs have)
// make a linear's columns for those channels tiny beside its rows' ranges, so a per-row grid has no
// levels for them while their error is multiplied by the large activation. Dividing the norm that
// produces the input by s_c and multiplying the weight columns by s_c (AWQ's and SmoothQuant's
// function-preserving rescale, free here: the norm stays in full precision) evens them out. The
// strength α of s_c = (rms_c / geomean rms)^α is chosen per input by the calibration proxy loss of
// round-to-nearest on a sample of rows — α = 0 (no change) is a candidate, so a model without
// outliers keeps its weights as they are. The proxy loss is the same in either coordinate system
// (H' = S⁻¹HS⁻¹, W' = WS), which is what makes the candidates comparable.
#include <span>
#include <vector>

#include "baq/tensor.hpp"
#include "baq/quant.hpp"

namespace baq {

struct InputSmoothing {
  double alpha = 0.0;
  std::vector<float> scale;  // per input channel; empty when α = 0
};

// The smoothing of one input read by the linears of `weights` (rows × cols each, any stored dtype) with
// Hessian `h` (cols × cols), judged by RTN at `settings`.
InputSmoothing choose_input_smoothing(const std::vector<const Tensor*>& weights, const std::vector<double>& h,
                                      const QuantSettings& settings);

// w (rows × cols) ← w·diag(scale).
void scale_columns(float* w, int64_t rows, int64_t cols, std::span<const float> scale);

}  // namespace baq
