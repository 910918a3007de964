#include "baq/bit_allocator.hpp"

#include <algorithm>
#include <cmath>
#include <queue>

#include "baq/error.hpp"

namespace baq {

BitAllocation BitAllocator::allocate(const std::vector<double>& c, double budget, const std::vector<double>& weights) const {
  const size_t n = c.size();
  if (n == 0) fail("bit allocation over no columns");
  if (!(budget >= min_bits_ && budget <= max_bits_)) fail("bit budget {} outside [{}, {}]", budget, min_bits_, max_bits_);
  if (!weights.empty() && weights.size() != n) fail("bit allocation: {} weights for {} columns", weights.size(), n);
  auto w = [&](size_t j) { return weights.empty() ? 1.0 : weights[j]; };
  double total_w = 0.0;
  std::vector<double> half_log_c(n);
  for (size_t j = 0; j < n; ++j) {
    if (!(w(j) > 0.0) || !std::isfinite(w(j))) fail("bit allocation: column {} has weight {}", j, w(j));
    if (!std::isfinite(c[j]) || c[j] < 0.0) fail("bit allocation: column {} has loss coefficient {}", j, c[j]);
    // A column with no loss at any rate (dead input) gets the floor; log of 0 would be -inf.
    half_log_c[j] = 0.5 * std::log2(std::max(c[j], 1e-300));
    total_w += w(j);
  }
  BitAllocation a;
  a.budget = budget;
  // Weighted mean rate as a function of the water level θ is continuous and non-decreasing: bisect.
  auto mean_rate = [&](double theta) {
    double s = 0.0;
    for (size_t j = 0; j < n; ++j) s += w(j) * std::clamp(theta + half_log_c[j], min_bits_, max_bits_);
    return s / total_w;
  };
  double lo = -max_bits_, hi = max_bits_;
  for (size_t j = 0; j < n; ++j) {
    lo = std::min(lo, -half_log_c[j] - 1.0);
    hi = std::max(hi, max_bits_ - half_log_c[j] + 1.0);
  }
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    (mean_rate(mid) < budget ? lo : hi) = mid;
  }
  a.theta = 0.5 * (lo + hi);
  a.rate.resize(n);
  for (size_t j = 0; j < n; ++j) a.rate[j] = std::clamp(a.theta + half_log_c[j], min_bits_, max_bits_);

  // Integer levels: start from floor(2^R_j) and add one level at a time where it buys the largest
  // modelled loss reduction per stored bit, while the budget allows; every step costs at most one
  // bit (L=1→2), so what is left unspent is below the heaviest column's weight.
  const int max_levels = static_cast<int>(std::lround(std::exp2(max_bits_)));
  const int min_levels = std::max(1, static_cast<int>(std::lround(std::exp2(min_bits_))));
  a.levels.resize(n);
  double spent = 0.0;
  const double allowance = budget * total_w;
  for (size_t j = 0; j < n; ++j) {
    a.levels[j] = std::clamp(static_cast<int>(std::floor(std::exp2(a.rate[j]) + 1e-9)), min_levels, max_levels);
    spent += w(j) * std::log2(static_cast<double>(a.levels[j]));
  }
  struct Step {
    double gain_per_bit;
    size_t j;
    bool operator<(const Step& o) const { return gain_per_bit != o.gain_per_bit ? gain_per_bit < o.gain_per_bit : j > o.j; }
  };
  auto step_of = [&](size_t j) {
    const double L = a.levels[j];
    const double gain = c[j] * (1.0 / (L * L) - 1.0 / ((L + 1) * (L + 1)));
    return Step{gain / std::log2((L + 1) / L), j};
  };
  std::priority_queue<Step> heap;
  for (size_t j = 0; j < n; ++j)
    if (a.levels[j] < max_levels) heap.push(step_of(j));
  while (!heap.empty()) {
    const Step s = heap.top();
    heap.pop();
    const double L = a.levels[s.j];
    const double cost = w(s.j) * std::log2((L + 1) / L);
    if (spent + cost > allowance + 1e-9 * total_w) continue;  // too dear now; cheaper steps may still fit
    spent += cost;
    ++a.levels[s.j];
    if (a.levels[s.j] < max_levels) heap.push(step_of(s.j));
  }
  a.realised = spent / total_w;
  double uniform = 0.0, allocated = 0.0;
  for (size_t j = 0; j < n; ++j) {
    uniform += w(j) * c[j] * std::exp2(-2.0 * budget);
    allocated += w(j) * c[j] * std::exp2(-2.0 * a.rate[j]);
  }
  a.predicted_loss_ratio = uniform > 0.0 ? allocated / uniform : 1.0;
  return a;
}

BitAllocation allocate_within_stored_budget(double code_rate, double budget, double min_step,
                                            const std::function<BitAllocation(double)>& allocate,
                                            const std::function<double(const std::vector<int>&)>& stored,
                                            const std::string& what) {
  constexpr double kMaxBits = 8.0;
  BitAllocation a = allocate(code_rate);
  double fits = -1, overshoots = code_rate;
  for (int round = 0; round < 30; ++round) {
    const double over = stored(a.levels) - budget;
    if (over <= 0) {
      fits = code_rate;
      break;
    }
    overshoots = code_rate;
    code_rate -= std::max(over, std::ldexp(min_step, round));
    if (!(code_rate > 0.0)) fail("{}: {} stored bits per weight leave nothing for codes", what, budget);
    a = allocate(code_rate);
  }
  if (fits < 0) fail("{}: no allocation meets {} stored bits per weight", what, budget);
  // What the last step left unspent: when the first guess fit, the bound above is a bit a weight more.
  if (overshoots == fits) overshoots = std::min(fits + 1.0, kMaxBits);
  for (int round = 0; round < 24 && overshoots > fits; ++round) {
    const double mid = 0.5 * (fits + overshoots);
    BitAllocation t = allocate(mid);
    if (stored(t.levels) <= budget) {
      fits = mid;
      a = std::move(t);
    } else {
      overshoots = mid;
    }
  }
  return a;
}

}  // namespace baq
