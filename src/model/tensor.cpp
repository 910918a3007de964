#include "baq/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <immintrin.h>

#include "baq/half.hpp"
#include "baq/io.hpp"
#include "model/cpu_features.hpp"

namespace baq {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Packed: return "packed";
  }
  return "?";
}

size_t dtype_size(DType dtype) { return dtype == DType::F32 ? 4 : dtype == DType::Packed ? 0 : 2; }

Tensor Tensor::zeros(std::vector<int64_t> shape) {
  Tensor t;
  t.shape = std::move(shape);
  auto storage = std::make_shared<std::vector<float>>(static_cast<size_t>(t.numel()), 0.0f);
  t.data = storage->data();
  t.raw = t.data;
  t.owner = storage;
  return t;
}

Tensor Tensor::view(std::vector<int64_t> shape, float* data, std::shared_ptr<void> owner) {
  Tensor t;
  t.shape = std::move(shape);
  t.data = data;
  t.raw = data;
  t.owner = std::move(owner);
  return t;
}

Tensor Tensor::view_of(std::vector<int64_t> shape, DType dtype, const void* raw, std::shared_ptr<void> owner, bool mapped) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = dtype;
  t.raw = raw;
  t.data = dtype == DType::F32 ? static_cast<float*>(const_cast<void*>(raw)) : nullptr;
  t.owner = std::move(owner);
  t.mapped = mapped;
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Tensor::shape_string() const { return fmt::format("[{}]", fmt::join(shape, ", ")); }

namespace {

__attribute__((target("avx2,f16c"))) void f16_avx2(const uint16_t* s, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  for (; i < n; ++i) out[i] = f16_to_f32(s[i]);
}

__attribute__((target("avx2"))) void bf16_avx2(const uint16_t* s, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
  for (; i < n; ++i) out[i] = bf16_to_f32(s[i]);
}

bool has_avx2_f16c() { return cpu_has_avx2_fma(); }

}  // namespace

void convert_to_f32(DType dtype, const void* src, int64_t n, float* out) {
  const auto* s = static_cast<const uint16_t*>(src);
  switch (dtype) {
    case DType::F32: std::memcpy(out, src, static_cast<size_t>(n) * 4); return;
    case DType::F16:
      if (has_avx2_f16c()) return f16_avx2(s, n, out);
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(s[i]);
      return;
    case DType::BF16:
      if (has_avx2_f16c()) return bf16_avx2(s, n, out);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(s[i]);
      return;
    case DType::Packed: break;
  }
}

void Tensor::rows_to_f32(int64_t r0, int64_t r1, float* out) const {
  const int64_t c = cols();
  convert_to_f32(dtype, static_cast<const uint8_t*>(raw) + static_cast<size_t>(r0 * c) * dtype_size(dtype), (r1 - r0) * c, out);
}

Tensor Tensor::to_f32() const {
  if (dtype == DType::F32) return *this;
  const int64_t n = numel();
  // Not zeroed first (every value is converted below): quantize converts each linear of a block, and
  // zeroing 46 MB on one thread left the others waiting.
  std::shared_ptr<float[]> storage = std::make_shared_for_overwrite<float[]>(static_cast<size_t>(n));
  Tensor t = view(shape, storage.get(), storage);
  constexpr int64_t kChunk = 1 << 16;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += kChunk)
    convert_to_f32(dtype, static_cast<const uint8_t*>(raw) + static_cast<size_t>(i) * dtype_size(dtype),
                   std::min(kChunk, n - i), t.data + i);
  return t;
}

namespace {

// The first value whose exponent bits (`mask`, of `Word`-sized values) are all ones, or −1. Chunks are
// tested whole by a loop without an early exit, which vectorizes (a per-value exit and a dtype test per
// value ran at 1.6 ns a value: 3 % of a quantize run, which checks every weight twice); only a chunk
// that holds one is searched for the index.
template <typename Word>
int64_t first_all_ones_exponent(const Word* w, int64_t n, Word mask) {
  constexpr int64_t kChunk = 16384;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  int64_t first_bad_chunk = chunks;
#pragma omp parallel for reduction(min : first_bad_chunk) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk, i1 = std::min(n, i0 + kChunk);
    int any = 0;
    for (int64_t i = i0; i < i1; ++i) any |= static_cast<int>((w[i] & mask) == mask);
    if (any != 0) first_bad_chunk = std::min(first_bad_chunk, c);
  }
  if (first_bad_chunk == chunks) return -1;
  for (int64_t i = first_bad_chunk * kChunk;; ++i)
    if ((w[i] & mask) == mask) return i;
}

}  // namespace

int64_t first_non_finite(const float* x, int64_t n) {
  return first_all_ones_exponent(reinterpret_cast<const uint32_t*>(x), n, uint32_t{0x7f800000});
}

int64_t first_non_finite(const double* x, int64_t n) {
  return first_all_ones_exponent(reinterpret_cast<const uint64_t*>(x), n, uint64_t{0x7ff0000000000000});
}

int64_t Tensor::first_non_finite() const {
  const int64_t n = numel();
  const auto* h = static_cast<const uint16_t*>(raw);
  // F16/BF16 are non-finite exactly when their exponent bits are all ones.
  switch (dtype) {
    case DType::F32: return baq::first_non_finite(data, n);
    case DType::F16: return first_all_ones_exponent(h, n, uint16_t{0x7c00});
    case DType::BF16: return first_all_ones_exponent(h, n, uint16_t{0x7f80});
    default: return -1;
  }
}

void Tensor::release_pages() const {
  if (mapped) MappedFile::release_mapped_pages(raw, static_cast<uint64_t>(bytes()));
}

}  // namespace baq
