#pragma once
// GPTQ's clip search measure (its `mse` grid search, norm 2.4): how badly a candidate range rounds a
// run of weights.
#include <cstdint>

#include "baq/quant.hpp"

namespace baq {

// |x_i − q(x_i)|^2.4 for n values on grid g (q the code the solver stores, GridParams::code_value;
// the power to ~1e-6 relative). `wide`: 16 values at a time under AVX-512 where the CPU has it — the
// same bits as the portable loop, which `wide = false` forces (the test compares the two).
void clip_terms(const float* v, int64_t n, const GridParams& g, float* out, bool wide = true);

// Σ_i |x_i − q(x_i)|^2.4, summed in double in a fixed order (the same on any machine).
double clip_error(const float* v, int64_t n, const GridParams& g);

}  // namespace baq
