#include <algorithm>
#include <cmath>

#include "baq/error.hpp"
#include "baq/pack.hpp"

namespace baq {

namespace {

int bits_for(int levels) {
  int b = 0;
  while ((1 << b) < levels) ++b;
  return b;
}

void check_levels(int levels) {
  if (levels < 1 || levels > 256) fail("code packing: level count {} outside 1..256", levels);
}

int64_t fixed_words(int64_t n, int levels) {
  check_levels(levels);
  if (levels == 1) return 0;
  const int k = fixed_width_codes_per_word(levels);
  return (n + k - 1) / k;
}

void fixed_pack(std::span<const uint8_t> codes, int levels, uint64_t* out) {
  if (levels == 1) return;
  const int b = bits_for(levels), k = fixed_width_codes_per_word(levels);
  for (size_t i = 0; i < codes.size(); i += static_cast<size_t>(k)) {
    uint64_t w = 0;
    for (int j = 0; j < k && i + static_cast<size_t>(j) < codes.size(); ++j) w |= static_cast<uint64_t>(codes[i + j]) << (b * j);
    *out++ = w;
  }
}

void fixed_unpack(const uint64_t* words, int levels, std::span<uint8_t> codes) {
  if (levels == 1) {
    std::fill(codes.begin(), codes.end(), uint8_t{0});
    return;
  }
  const int b = bits_for(levels), k = fixed_width_codes_per_word(levels);
  const uint64_t mask = (uint64_t{1} << b) - 1;
  for (size_t i = 0; i < codes.size(); i += static_cast<size_t>(k)) {
    const uint64_t w = *words++;
    for (int j = 0; j < k && i + static_cast<size_t>(j) < codes.size(); ++j) codes[i + j] = static_cast<uint8_t>((w >> (b * j)) & mask);
  }
}

int64_t radix_words(int64_t n, int levels) {
  check_levels(levels);
  if (levels == 1) return 0;
  const int k = mixed_radix_codes_per_word(levels);
  return (n + k - 1) / k;
}

// Horner's rule from the last code of the word to the first, so the first code is the lowest digit.
void radix_pack(std::span<const uint8_t> codes, int levels, uint64_t* out) {
  if (levels == 1) return;
  const int k = mixed_radix_codes_per_word(levels);
  for (size_t i = 0; i < codes.size(); i += static_cast<size_t>(k)) {
    const size_t end = std::min(codes.size(), i + static_cast<size_t>(k));
    uint64_t w = 0;
    for (size_t j = end; j-- > i;) w = w * static_cast<uint64_t>(levels) + codes[j];
    *out++ = w;
  }
}

void radix_unpack(const uint64_t* words, int levels, std::span<uint8_t> codes) {
  if (levels == 1) {
    std::fill(codes.begin(), codes.end(), uint8_t{0});
    return;
  }
  const int k = mixed_radix_codes_per_word(levels);
  const auto L = static_cast<uint64_t>(levels);
  for (size_t i = 0; i < codes.size(); i += static_cast<size_t>(k)) {
    uint64_t w = *words++;
    for (int j = 0; j < k && i + static_cast<size_t>(j) < codes.size(); ++j) {
      codes[i + j] = static_cast<uint8_t>(w % L);
      w /= L;
    }
  }
}

}  // namespace

int fixed_width_codes_per_word(int levels) { return levels <= 1 ? 64 : 64 / bits_for(levels); }

int mixed_radix_codes_per_word(int levels) {
  if (levels <= 1) return 64;
  // Largest k with levels^k ≤ 2^64, by exact integer arithmetic (no floating-point log).
  int k = 0;
  unsigned __int128 p = 1;
  while (p * static_cast<unsigned>(levels) <= (static_cast<unsigned __int128>(1) << 64)) {
    p *= static_cast<unsigned>(levels);
    ++k;
  }
  return k;
}

const CodePacking& fixed_width_packing() {
  static const CodePacking p{"fixed", fixed_words, fixed_pack, fixed_unpack};
  return p;
}

const CodePacking& mixed_radix_packing() {
  static const CodePacking p{"mixed-radix", radix_words, radix_pack, radix_unpack};
  return p;
}

const CodePacking& packing_by_name(const std::string& name) {
  for (const CodePacking* p : {&fixed_width_packing(), &mixed_radix_packing()})
    if (name == p->name) return *p;
  fail("unknown code packing '{}' (fixed or mixed-radix)", name);
}

}  // namespace baq
