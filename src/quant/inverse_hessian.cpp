#include "quant/inverse_hessian.hpp"

#include <lapacke.h>

#include <cmath>
#include <cstring>

#include "baq/error.hpp"

namespace baq {

InverseHessianFactor inverse_hessian_factor(const std::function<void(double*)>& fill, int64_t n, double damp_fraction,
                                            int max_retries, const std::string& name) {
  InverseHessianFactor f;
  f.storage.resize(static_cast<size_t>(n * n));
  double* a = f.storage.data();
  fill(a);
  double mean_diag = 0.0;
  for (int64_t i = 0; i < n; ++i) mean_diag += a[i * n + i];
  mean_diag /= static_cast<double>(n);
  if (!(mean_diag > 0.0)) mean_diag = 1.0;  // all inputs zero: any positive scale will do
  f.damp = damp_fraction * mean_diag;
  const int ni = static_cast<int>(n);
  for (bool first = true;; f.damp = f.damp > 0.0 ? f.damp * 10.0 : 1e-6 * mean_diag, ++f.retries, first = false) {
    if (f.retries > max_retries)
      fail("{}: Hessian is not positive definite even with damping {:.3g} ({} retries); too few calibration tokens?",
           name, f.damp / 10.0, max_retries);
    if (!first) fill(a);
    for (int64_t i = 0; i < n; ++i) a[i * n + i] += f.damp;
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', ni, a, ni) != 0) continue;
    if (LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', ni, a, ni) != 0) continue;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) a[i * n + j] = a[j * n + i];
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', ni, a, ni) != 0) continue;
    bool finite = true;
    for (int64_t i = 0; i < n && finite; ++i) finite = std::isfinite(a[i * n + i]) && a[i * n + i] > 0.0;
    if (!finite) continue;
    break;
  }
  // U as floats over the same bytes, in increasing order: element k (4 bytes at 4k) is written after
  // every double it overlaps (bytes 8·(k/2) onwards) has been read.
  auto* u = reinterpret_cast<float*>(a);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = i * n + j;
      const float v = j >= i ? static_cast<float>(a[k]) : 0.0f;
      std::memcpy(u + k, &v, sizeof v);
    }
  return f;
}

}  // namespace baq
