#include "io/tensor_convert.hpp"

#include <cmath>
#include <cstring>

#include "baq/error.hpp"

namespace baq {

Tensor convert_to_f32(const std::shared_ptr<MappedFile>& file, uint64_t offset, const TensorInfo& info,
                      const std::string& name) {
  int64_t numel = 1;
  for (int64_t d : info.shape) numel *= d;
  const uint8_t* src = file->data() + offset;
  Tensor out;
  if (info.dtype == DType::F32 && offset % alignof(float) == 0) {
    out = Tensor::view(info.shape, reinterpret_cast<float*>(file->data() + offset), file);
  } else {
    out = Tensor::zeros(info.shape);
    float* dst = out.data;
    switch (info.dtype) {
      case DType::F32:
        std::memcpy(dst, src, static_cast<size_t>(numel) * 4);
        break;
      case DType::F16:
      case DType::BF16: {
        const bool bf16 = info.dtype == DType::BF16;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < numel; ++i) {
          uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          dst[i] = bf16 ? bf16_to_f32(h) : f16_to_f32(h);
        }
        break;
      }
      case DType::Packed:
        fail("{}: tensor '{}' is packed; only a .baq reader decodes it", file->path(), name);
    }
  }
  int64_t bad = -1;
  const float* p = out.data;
#pragma omp parallel for reduction(max : bad) schedule(static)
  for (int64_t i = 0; i < numel; ++i)
    if (!std::isfinite(p[i])) bad = std::max(bad, i);
  if (bad >= 0) fail("{}: tensor '{}' holds a non-finite value (NaN or Inf) at element {}", file->path(), name, bad);
  return out;
}

}  // namespace baq
