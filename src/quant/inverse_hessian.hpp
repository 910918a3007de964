#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace baq {

// The upper Cholesky factor U of (H + λI)⁻¹ (so (H + λI)⁻¹ = UᵀU), as GPTQ uses it. λ starts at
// `damp_fraction`·mean(diag H) and grows ×10 per retry while the factorisation fails.
struct InverseHessianFactor {
  std::vector<float> u;  // n × n row-major, lower triangle zero
  double damp = 0.0;
  int retries = 0;
};
InverseHessianFactor inverse_hessian_factor(std::vector<double> h, int64_t n, double damp_fraction, int max_retries,
                                            const std::string& name);

}  // namespace baq
