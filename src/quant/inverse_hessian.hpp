#pragma once
#include <cstdint>
#include <functional>
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
  double damp = 0.0;
  int retries = 0;
};
InverseHessianFactor inverse_hessian_factor(const std::function<void(float*)>& fill, int64_t n, double damp_fraction,
                                            int max_retries, const std::string& name);

}  // namespace baq
