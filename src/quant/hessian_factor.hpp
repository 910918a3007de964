#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace baq {

// The damped Hessian's Cholesky factor in GPTQ's visiting order reversed, as the solver uses it:
// H + λI = R·Rᵀ with R upper triangular (so R⁻¹ is GPTQ's U, the upper Cholesky factor of
// (H + λI)⁻¹). GPTQ's updates need no inverse (QuIP's LDLQ form of the same algorithm): with
// d_i = w_i − q_i against the original weights, column j is quantized from
// w'_j = w_j − Σ_{i<j} d_i·P_ij, P_ij = −R_ij/R_jj, and its error is e_j = (w'_j − q_j)·R_jj
// (GPTQ's (w'_j − q_j)/U_jj). One Cholesky, n³/3, where U took that and a triangular inverse.
//
// In F32 as GPTQ's reference computes it (twice the rate of double and half the memory, which is
// what lets a 14336-wide layer's factor fit beside its Hessian). λ starts at `damp_fraction`·mean(diag
// H) and grows ×10 per retry while the factorisation fails. Memory is one n × n float buffer: `fill`
// writes H into it (again after a failed attempt) and it is factorised in place.
struct HessianFactor {
  int64_t n = 0;
  std::vector<float> p;  // n × n row-major: P_ij above the diagonal, R_jj on it, zero below
  // [(H + λI)⁻¹]_ii = Σ_{k≤i} U_ki², only when asked for (BAQ's order-invariant column weights: the
  // inverse's n³/3 again), else empty.
  std::vector<double> inverse_diagonal;
  double damp = 0.0;
  int retries = 0;
  float r(int64_t j) const { return p[static_cast<size_t>(j * n + j)]; }
};
HessianFactor hessian_factor(const std::function<void(float*)>& fill, int64_t n, double damp_fraction, int max_retries,
                             const std::string& name, bool inverse_diagonal);

// The factor GPTQ needs for Hessian `h` (n × n) visited in `perm` order: the one the previous call
// made when it had the same Hessian (by content), order and damping settings (and the inverse's
// diagonal, if asked for) — linears fed the same input share a Hessian (q/k/v, gate/up) and BAQ
// solves each linear two or three times — else a new one from `fill`. One factor is kept at a time
// (a new Hessian drops the old factor before it is made), until release_gptq_factor_cache().
std::shared_ptr<const HessianFactor> shared_hessian_factor(const double* h, int64_t n, const std::vector<int64_t>& perm,
                                                           const std::function<void(float*)>& fill, double damp_fraction,
                                                           int max_retries, const std::string& name, bool inverse_diagonal);

}  // namespace baq
