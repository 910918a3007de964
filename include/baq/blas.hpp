#pragma once
// OpenBLAS set-up. OpenBLAS 0.3.21 (Debian 12) does not know recent Xeons (e.g. family 6 model 207)
// and falls back to its generic "Prescott" SSE3 kernels, 3-5x slower than what the CPU can run;
// configure_blas() switches any kernel set narrower than the CPU's vectors — OpenBLAS's pick or an
// OPENBLAS_CORETYPE in the environment — to the best one it supports (and sets OPENBLAS_CORETYPE to
// it for child processes): a narrower set is slower, and Haswell's gave thread-count-dependent
// results on AVX-512 CPUs. An OPENBLAS_CORETYPE at least as wide is kept. Idempotent; call before the
// first BLAS call.
#include <cstdint>
#include <functional>
#include <string>

namespace baq {

void configure_blas();
// The kernel set in use ("SkylakeX", "Haswell", ...), as OpenBLAS names it.
std::string blas_core_name();

// out (rows × n) = x (rows × k) · Wᵀ for a weight W (n × k) held in another form than F32:
// `rows_to_f32(r0, r1, dst)` writes rows [r0, r1) of W in F32 (called from several threads at once,
// on disjoint rows). Bounded memory: a panel of at most kConvertedPanelFloats converted values.
constexpr int64_t kConvertedPanelFloats = int64_t{1} << 24;
void matmul_converted_rows(const float* x, int64_t rows, int64_t n, int64_t k,
                           const std::function<void(int64_t r0, int64_t r1, float* dst)>& rows_to_f32, float* out);

}  // namespace baq
