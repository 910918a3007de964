#pragma once
// A dense tensor in the dtype it is stored in. It either owns its storage or views memory owned by
// someone else (a mapped checkpoint file): weights stay mapped in their stored dtype (F32, F16, BF16)
// and are converted a tile at a time where they are used, never whole.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace baq {

enum class DType { F32, F16, BF16, Packed };  // Packed: a .baq quantized linear (not a dense tensor)
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct Tensor {
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  float* data = nullptr;         // the values when dtype is F32, else null
  const void* raw = nullptr;     // the stored values, whatever the dtype
  std::shared_ptr<void> owner;   // keeps the storage (a vector or a mapping) alive
  bool mapped = false;           // a view into a mapped file (its pages can be released)

  static Tensor zeros(std::vector<int64_t> shape);
  // An F32 view of memory someone else owns.
  static Tensor view(std::vector<int64_t> shape, float* data, std::shared_ptr<void> owner);
  // A view of stored values of any dense dtype.
  static Tensor view_of(std::vector<int64_t> shape, DType dtype, const void* raw, std::shared_ptr<void> owner, bool mapped);

  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const { return shape.empty() ? 1 : numel() / rows(); }
  bool empty() const { return raw == nullptr; }
  uint64_t bytes() const { return static_cast<uint64_t>(numel()) * dtype_size(dtype); }
  // F32 only (the spans of other dtypes would not be floats).
  std::span<float> span() { return {data, static_cast<size_t>(numel())}; }
  std::span<const float> span() const { return {data, static_cast<size_t>(numel())}; }
  std::string shape_string() const;

  // Rows [r0, r1) (of the 2-D view rows() × cols()) as F32 into `out`.
  void rows_to_f32(int64_t r0, int64_t r1, float* out) const;
  // The tensor as F32: itself when already F32, else a converted copy.
  Tensor to_f32() const;
  // The index of the first NaN or infinity, or −1.
  int64_t first_non_finite() const;
  // Lets the kernel drop the pages of a mapped view from memory (they are read again if used);
  // owned storage is left as it is.
  void release_pages() const;
};

// The index of the first NaN or infinity among `n` floats, or −1 (on all threads).
int64_t first_non_finite(const float* x, int64_t n);
int64_t first_non_finite(const double* x, int64_t n);

// F16/BF16 → F32 for `n` values (vectorised where the CPU allows).
void convert_to_f32(DType dtype, const void* src, int64_t n, float* out);

}  // namespace baq
