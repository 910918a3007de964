#pragma once
// BAQ's bit allocation (arXiv 2506.05664): with column losses ℓ_j(R_j) ≈ c_j·2^(−2R_j), minimising
// Σ w_j·ℓ_j subject to the weighted mean rate Σ w_j R_j / Σ w_j = R̄ is convex, with the closed form
// R_j = R̄ + ½·log2(c_j / geomean_w(c)). With the clamp R_j ∈ [0, R_max] the solution is reverse
// water-filling: R_j = clamp(θ + ½·log2 c_j, 0, R_max) with θ set so the budget holds.
// Realised as integer level counts L_j ≥ 1 (any integer, not only powers of two) whose weighted
// mean log2 L_j meets the budget from below to within max_j w_j / Σ w_j bits (1/columns per layer).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace baq {

struct BitAllocation {
  std::vector<double> rate;   // continuous clamped closed form R_j
  std::vector<int> levels;    // realised L_j ≥ 1
  double theta = 0.0;         // the water level
  double budget = 0.0;        // R̄
  double realised = 0.0;      // weighted mean log2 L_j
  // Modelled loss after allocation over loss at uniform R̄: geomean(ℓ)/mean(ℓ) when nothing clamps.
  double predicted_loss_ratio = 1.0;
};

class BitAllocator {
 public:
  // R_j ∈ [min_bits, max_bits] (and 2^min_bits ≤ L_j ≤ 2^max_bits, min_bits = log2 of an integer).
  // Weights default to 1 (one layer's columns); for a model-wide budget pass each column's row count.
  explicit BitAllocator(double max_bits = 8.0, double min_bits = 0.0) : max_bits_(max_bits), min_bits_(min_bits) {}
  BitAllocation allocate(const std::vector<double>& c, double budget, const std::vector<double>& weights = {}) const;

 private:
  double max_bits_, min_bits_;
};

// The allocation that meets a budget of stored bits per weight (`stored` of its levels: codes with
// packing, widths, one-level means, ranges) from below as closely as integer levels allow. What is
// stored beyond the codes depends on the levels, so the code budget starts at `code_rate`, is lowered
// by the overshoot until the stored cost fits (at least `min_step` a round, doubling: overshoots can
// be smaller than any change of one level count), then raised by bisection to the largest code budget
// that still fits. Fails naming `what` when none does.
BitAllocation allocate_within_stored_budget(double code_rate, double budget, double min_step,
                                            const std::function<BitAllocation(double)>& allocate,
                                            const std::function<double(const std::vector<int>&)>& stored,
                                            const std::string& what);

}  // namespace baq
