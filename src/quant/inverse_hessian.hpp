#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace baq {

// The upper Cholesky factor U of (H + λI)⁻¹ (so (H + λI)⁻¹ = UᵀU), as GPTQ uses it, in F32 as GPTQ's
// reference computes it (twice the rate of double and half the memory,
// which is what lets a 14336-wide layer's factor fit beside its Hessian). λ starts at
// `damp_fraction`·mean(diag H) and grows ×10 per retry while the factorisation fails.
//
// Memory is one n × n float buffer: `fill` writes H into it (again after a failed attempt) and it is
// factorised in place.
struct InverseHessianFactor {
  std::vector<float> u;  // n × n row-major, lower triangle zero
  std::vector<double> inverse_diagonal;  // [(H + λI)⁻¹]_ii = Σ_{k≤i} U_ki²
  double damp = 0.0;
  int retries = 0;
};
InverseHessianFactor inverse_hessian_factor(const std::function<void(float*)>& fill, int64_t n, double damp_fraction,
                                            int max_retries, const std::string& name);

// The factor GPTQ needs for Hessian `h` (n × n) visited in `perm` order: the one the previous call
// made when it had the same Hessian (by content), order and damping settings — linears fed the same
// input share a Hessian (q/k/v, gate/up) and BAQ solves each linear two or three times — else a new
// one from `fill`. One factor is kept at a time (a new Hessian drops the old factor before it is
// made), until release_gptq_factor_cache().
std::shared_ptr<const InverseHessianFactor> shared_inverse_hessian_factor(const double* h, int64_t n,
                                                                          const std::vector<int64_t>& perm,
                                                                          const std::function<void(float*)>& fill,
                                                                          double damp_fraction, int max_retries,
                                                                          const std::string& name);

}  // namespace baq
