#pragma once
// OpenBLAS set-up. OpenBLAS 0.3.21 (Debian 12) does not know recent Xeons (e.g. family 6 model 207)
// and falls back to its generic "Prescott" SSE3 kernels, 3-5x slower than what the CPU can run;
// configure_blas() switches such a fallback to the best kernel set the CPU supports. A user's own
// OPENBLAS_CORETYPE is respected. Idempotent; call before the first BLAS call.
#include <string>

namespace baq {

void configure_blas();
// The kernel set in use ("SkylakeX", "Haswell", ...), as OpenBLAS names it.
std::string blas_core_name();

}  // namespace baq
