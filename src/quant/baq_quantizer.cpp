#include <algorithm>
#include <cmath>

#include "baq/bit_allocator.hpp"
#include "baq/error.hpp"
#include "baq/quant.hpp"

namespace baq {

std::vector<double> loss_coefficients(const std::vector<double>& column_loss, int uniform_levels) {
  std::vector<double> c(column_loss.size());
  const double l2 = static_cast<double>(uniform_levels) * uniform_levels;
  for (size_t j = 0; j < c.size(); ++j) c[j] = column_loss[j] * l2;
  return c;
}

int measurement_levels(double rate) {
  return std::clamp(static_cast<int>(std::lround(std::exp2(rate))), 2, 256);
}

BaqLayerResult quantize_baq(const float* w, int64_t rows, int64_t cols, const double* h, const QuantSettings& s,
                            double rate, const std::string& name) {
  if (!(rate > 0.0 && rate <= 8.0)) fail("{}: BAQ rate {} outside (0, 8]", name, rate);
  const int l0 = measurement_levels(rate);
  const std::vector<int> uniform(static_cast<size_t>(cols), l0);
  const QuantizedMatrix pass1 = quantize_gptq(w, rows, cols, h, s, name, &uniform);
  const BitAllocation a = BitAllocator(8.0).allocate(loss_coefficients(pass1.column_loss, l0), rate);
  BaqLayerResult r;
  r.levels = a.levels;
  r.loss_before = pass1.loss;
  r.predicted_loss_ratio = a.predicted_loss_ratio;
  r.quantized = quantize_gptq(w, rows, cols, h, s, name, &r.levels);
  return r;
}

}  // namespace baq
