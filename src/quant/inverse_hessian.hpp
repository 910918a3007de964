#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace baq {

// The upper Cholesky factor U of (H + λI)⁻¹ (so (H + λI)⁻¹ = UᵀU), as GPTQ uses it. λ starts at
// `damp_fraction`·mean(diag H) and grows ×10 per retry while the factorisation fails.
//
// Memory is one n × n buffer of doubles: `fill` writes H into it (again after a failed attempt), it is
// factorised in place, and U is left in it as floats (the first half of its bytes): for the widest
// layers (n = 14336, a 1.6 GB Hessian) a second or third copy would not fit beside the first.
struct InverseHessianFactor {
  std::vector<double> storage;  // n × n; after factoring, U as n × n floats at its start
  const float* u() const { return reinterpret_cast<const float*>(storage.data()); }
  double damp = 0.0;
  int retries = 0;
};
InverseHessianFactor inverse_hessian_factor(const std::function<void(double*)>& fill, int64_t n, double damp_fraction,
                                            int max_retries, const std::string& name);

}  // namespace baq
