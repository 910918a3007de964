#pragma once
// The code layouts the format table is made of (quant_formats.cpp): each one's fit test, row size,
// packing and fused matvec.
#include "baq/pack.hpp"

namespace baq {

bool radix_accepts(const std::vector<int>& levels, bool natural_groups);
int64_t radix_row_bytes(const PackedLinear& p);
void radix_pack_row(const PackedLinear& p, const uint8_t* codes, uint8_t* out);
void radix_unpack_row(const PackedLinear& p, const uint8_t* in, uint8_t* codes);
void radix_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out);

// Plane widths of b-bit codes, lowest bits first: 1 → {1}, 3 → {2, 1}, 5 → {4, 1}, 7 → {4, 2, 1}, 8 → {4, 4}.
std::vector<int> plane_widths(int bits);
bool planes_accepts(const std::vector<int>& levels, bool natural_groups);
int64_t planes_row_bytes(const PackedLinear& p);
void planes_pack_row(const PackedLinear& p, const uint8_t* codes, uint8_t* out);
void planes_unpack_row(const PackedLinear& p, const uint8_t* in, uint8_t* codes);
void planes_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out);

}  // namespace baq
