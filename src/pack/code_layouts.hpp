#pragma once
// The code layouts the format table is made of (quant_formats.cpp): each one's fit test, row size,
// packing, fused matvec and (where it has one) fast decoder.
#include <cstring>

#include "baq/pack.hpp"

namespace baq {

// A radix word's field of `bits` bits from bit `at` of a code stream, in a 64-bit word's top bits.
// Two fixed 8-byte loads (the stream is padded: PackedLinear keeps 64 zero bytes after its rows) give
// the 64 bits from the field's first bit; shifting them up by 64 − bits leaves only the field. No
// branch and no variable-length copy: the fused matvec does this once per word of every row of every
// token (with BMI2 the shifts are one instruction each).
inline uint64_t radix_field(const uint8_t* stream, int64_t at, int bits) {
  uint64_t lo, hi;
  std::memcpy(&lo, stream + (at >> 3), 8);
  std::memcpy(&hi, stream + (at >> 3) + 8, 8);
  const auto s = static_cast<unsigned>(at & 7);
  return ((lo >> s) | ((hi << 1) << (63 - s))) << (64 - bits);  // (hi << 1) << (63 − s): no shift by 64 when s = 0
}

bool radix_accepts(const std::vector<int>& levels, bool natural_groups);
int64_t radix_row_bits(const PackedLinear& p);
void radix_pack_row(PackedLinear& p, int64_t r, const uint8_t* codes);
void radix_unpack_row(const PackedLinear& p, int64_t r, uint8_t* codes);
void radix_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out);

// Plane widths of b-bit codes, lowest bits first: 1 → {1}, 3 → {2, 1}, 5 → {4, 1}, 7 → {4, 2, 1}, 8 → {4, 4}.
std::vector<int> plane_widths(int bits);
bool planes_accepts(const std::vector<int>& levels, bool natural_groups);
int64_t planes_row_bits(const PackedLinear& p);
void planes_pack_row(PackedLinear& p, int64_t r, const uint8_t* codes);
void planes_unpack_row(const PackedLinear& p, int64_t r, uint8_t* codes);
void planes_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out);
bool planes_decode_rows(const PackedLinear& p, int64_t r0, int64_t r1, float* out);
// A radix linear's rows by its planes twin (PackedLinear::planes_twin, set).
void planes_twin_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out);

}  // namespace baq
