#include "io/tensor_convert.hpp"

#include <cstring>

#include "baq/error.hpp"

namespace baq {

namespace {

void reject_packed(const TensorInfo& info, const MappedFile& file) {
  if (info.dtype == DType::Packed) fail("{}: tensor '{}' is packed; only a .baq reader decodes it", file.path(), info.name);
}

}  // namespace

Tensor view_tensor(const std::shared_ptr<MappedFile>& file, uint64_t offset, const TensorInfo& info) {
  reject_packed(info, *file);
  const uint8_t* src = file->data() + offset;
  if (reinterpret_cast<uintptr_t>(src) % dtype_size(info.dtype) == 0)
    return Tensor::view_of(info.shape, info.dtype, src, file, true);
  // Misaligned (a safetensors header of odd length): one converted copy, through an aligned buffer.
  Tensor raw;
  raw.shape = info.shape;
  const uint64_t bytes = raw.numel() * dtype_size(info.dtype);
  auto aligned = std::make_shared<std::vector<float>>((bytes + 3) / 4);
  std::memcpy(aligned->data(), src, bytes);
  return Tensor::view_of(info.shape, info.dtype, aligned->data(), aligned, false).to_f32();
}

Tensor gather_to_f32(const std::shared_ptr<MappedFile>& file, uint64_t base, int64_t element_offset,
                     const std::vector<int64_t>& stride, const TensorInfo& info) {
  reject_packed(info, *file);
  Tensor out = Tensor::zeros(info.shape);
  const int64_t numel = out.numel();
  const size_t dims = info.shape.size();
  const size_t step = dtype_size(info.dtype);
  std::vector<int64_t> index(dims, 0);
  int64_t at = element_offset;  // the source element of `index`, kept incrementally like an odometer
  for (int64_t i = 0; i < numel; ++i) {
    convert_to_f32(info.dtype, file->data() + base + step * static_cast<uint64_t>(at), 1, out.data + i);
    for (size_t d = dims; d-- > 0;) {
      if (++index[d] < info.shape[d]) {
        at += stride[d];
        break;
      }
      at -= (info.shape[d] - 1) * stride[d];
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace baq
