// Products with weights stored in another form than F32 (half precision, packed codes), for many rows
// of activations (a prompt, a calibration batch, a perplexity window).
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "baq/blas.hpp"

namespace baq {

void matmul_converted_rows(const float* x, int64_t rows, int64_t n, int64_t k,
                           const std::function<void(int64_t r0, int64_t r1, float* dst)>& rows_to_f32, float* out) {
  // Panels of up to 64 MB of F32 weights (a multiple of 64 rows; a whole linear of a 1–3B model),
  // each converted by all threads in 64-row pieces, then one sgemm on all threads. OpenBLAS packs all
  // of x again for every call: 8 MB panels (1,024 rows of a 2048-wide weight, 320 of a 5632-wide one)
  // held a 4096-token product at 94 / 85 % of one call's rate. Per-thread 64-row tiles with a
  // one-thread sgemm each (before that) re-read x for every 64 output columns: half the sgemm rate.
  constexpr int64_t kPiece = 64;
  const int64_t panel_rows =
      std::min(std::max(kPiece, kConvertedPanelFloats / std::max<int64_t>(k, 1) / kPiece * kPiece), n);
  thread_local std::vector<float> panel;
  panel.resize(static_cast<size_t>(panel_rows * k));
  for (int64_t p0 = 0; p0 < n; p0 += panel_rows) {
    const int64_t p1 = std::min(n, p0 + panel_rows);
    float* w = panel.data();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t r0 = p0; r0 < p1; r0 += kPiece) rows_to_f32(r0, std::min(p1, r0 + kPiece), w + (r0 - p0) * k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(p1 - p0),
                static_cast<int>(k), 1.0f, x, static_cast<int>(k), w, static_cast<int>(k), 0.0f, out + p0,
                static_cast<int>(n));
  }
}

}  // namespace baq
