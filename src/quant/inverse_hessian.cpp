#include "quant/inverse_hessian.hpp"

#include <lapacke.h>

#include <cmath>

#include "baq/error.hpp"

namespace baq {

InverseHessianFactor inverse_hessian_factor(std::vector<double> h, int64_t n, double damp_fraction, int max_retries,
                                            const std::string& name) {
  double mean_diag = 0.0;
  for (int64_t i = 0; i < n; ++i) mean_diag += h[i * n + i];
  mean_diag /= static_cast<double>(n);
  if (!(mean_diag > 0.0)) mean_diag = 1.0;  // all inputs zero: any positive scale will do
  InverseHessianFactor f;
  f.damp = damp_fraction * mean_diag;
  const int ni = static_cast<int>(n);
  std::vector<double> a(h.size());
  for (;; f.damp = f.damp > 0.0 ? f.damp * 10.0 : 1e-6 * mean_diag, ++f.retries) {
    if (f.retries > max_retries)
      fail("{}: Hessian is not positive definite even with damping {:.3g} ({} retries); too few calibration tokens?",
           name, f.damp / 10.0, max_retries);
    a = h;
    for (int64_t i = 0; i < n; ++i) a[i * n + i] += f.damp;
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', ni, a.data(), ni) != 0) continue;
    if (LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', ni, a.data(), ni) != 0) continue;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) a[i * n + j] = a[j * n + i];
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', ni, a.data(), ni) != 0) continue;
    bool finite = true;
    for (int64_t i = 0; i < n && finite; ++i) finite = std::isfinite(a[i * n + i]) && a[i * n + i] > 0.0;
    if (!finite) continue;
    break;
  }
  f.u.assign(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) f.u[i * n + j] = static_cast<float>(a[i * n + j]);
  return f;
}

}  // namespace baq
