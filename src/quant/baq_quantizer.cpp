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

void shrink_coefficients(std::vector<double>& c, double lambda) {
  if (!(lambda >= 0.0 && lambda <= 1.0)) fail("BAQ shrinkage {} outside [0, 1]", lambda);
  if (lambda == 0.0) return;
  double mean_log = 0;
  int n = 0;
  for (double v : c)
    if (v > 0) mean_log += std::log(v), ++n;
  if (n == 0) return;
  mean_log /= n;
  // Dead columns (c = 0) stay at zero: nothing to allocate to them whatever the calibration.
  for (double& v : c)
    if (v > 0) v = std::exp((1 - lambda) * std::log(v) + lambda * mean_log);
}

std::vector<double> baq_coefficients(const QuantizedMatrix& pass1, int uniform_levels, const QuantSettings& s) {
  std::vector<double> c = loss_coefficients(pass1.column_loss, uniform_levels);
  const double l2 = static_cast<double>(uniform_levels) * uniform_levels;
  if (s.baq_order_invariant)
    for (size_t j = 0; j < c.size(); ++j) c[j] = pass1.column_sq_error[j] * pass1.column_weight[j] * l2;
  shrink_coefficients(c, s.baq_shrink);
  return c;
}

double measured_loss_ratio(double loss, double uniform_loss, int uniform_levels, double rate) {
  const double uniform_at_budget = uniform_loss * std::exp2(-2.0 * (rate - std::log2(static_cast<double>(uniform_levels))));
  return uniform_at_budget > 0 ? loss / uniform_at_budget : 1.0;
}

int measurement_levels(double rate) {
  return std::clamp(static_cast<int>(std::lround(std::exp2(rate))), 2, 256);
}

BaqLayerResult quantize_baq(const float* w, int64_t rows, int64_t cols, const double* h, const QuantSettings& s,
                            double rate, const std::string& name,
                            const std::function<double(const std::vector<int>&)>& stored_bpw) {
  if (!(rate > 0.0 && rate <= 8.0)) fail("{}: BAQ rate {} outside (0, 8]", name, rate);
  // The code-bit budget: the rate itself, or the stored budget less what uniform levels cost beyond
  // their codes (ranges, packing), refined below.
  double code_rate = rate;
  if (stored_bpw) {
    const int l = measurement_levels(rate);
    code_rate = rate - (stored_bpw(std::vector<int>(static_cast<size_t>(cols), l)) - std::log2(static_cast<double>(l)));
    if (!(code_rate > 0.0)) fail("{}: {} stored bits per weight leave nothing for codes", name, rate);
  }
  const int l0 = measurement_levels(code_rate);
  const std::vector<int> uniform(static_cast<size_t>(cols), l0);
  const QuantizedMatrix pass1 = quantize_gptq(w, rows, cols, h, s, name, &uniform);
  const std::vector<double> c = baq_coefficients(pass1, l0, s);
  const auto allocate = [&](double budget) { return BitAllocator(8.0).allocate(c, budget); };
  // One bit a row: about the smallest change a level count makes to what a row stores.
  const BitAllocation a = stored_bpw ? allocate_within_stored_budget(code_rate, rate, 1.0 / static_cast<double>(cols), allocate,
                                                                      stored_bpw, name)
                                     : allocate(code_rate);
  BaqLayerResult r;
  r.levels = a.levels;
  r.loss_before = pass1.loss;
  r.predicted_loss_ratio = a.predicted_loss_ratio;
  r.quantized = quantize_gptq(w, rows, cols, h, s, name, &r.levels);
  r.measured_loss_ratio = measured_loss_ratio(r.quantized.loss, pass1.loss, l0, a.budget);
  return r;
}

}  // namespace baq
