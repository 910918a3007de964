#include "io/tensor_convert.hpp"

#include <cmath>
#include <cstring>

#include "baq/error.hpp"

namespace baq {

namespace {

float decode(const uint8_t* p, DType dtype) {
  uint16_t h;
  float f;
  switch (dtype) {
    case DType::F32: std::memcpy(&f, p, 4); return f;
    case DType::F16: std::memcpy(&h, p, 2); return f16_to_f32(h);
    case DType::BF16: std::memcpy(&h, p, 2); return bf16_to_f32(h);
    case DType::Packed: break;
  }
  return 0.0f;
}

void check_finite(const Tensor& t, const MappedFile& file, const std::string& name) {
  const int64_t numel = t.numel();
  int64_t bad = -1;
  const float* p = t.data;
#pragma omp parallel for reduction(max : bad) schedule(static)
  for (int64_t i = 0; i < numel; ++i)
    if (!std::isfinite(p[i])) bad = std::max(bad, i);
  if (bad >= 0) fail("{}: tensor '{}' holds a non-finite value (NaN or Inf) at element {}", file.path(), name, bad);
}

void reject_packed(const TensorInfo& info, const MappedFile& file, const std::string& name) {
  if (info.dtype == DType::Packed) fail("{}: tensor '{}' is packed; only a .baq reader decodes it", file.path(), name);
}

}  // namespace

Tensor convert_to_f32(const std::shared_ptr<MappedFile>& file, uint64_t offset, const TensorInfo& info,
                      const std::string& name) {
  reject_packed(info, *file, name);
  const uint8_t* src = file->data() + offset;
  Tensor out;
  if (info.dtype == DType::F32 && offset % alignof(float) == 0) {
    out = Tensor::view(info.shape, reinterpret_cast<float*>(file->data() + offset), file);
  } else {
    out = Tensor::zeros(info.shape);
    float* dst = out.data;
    const int64_t numel = out.numel();
    const size_t step = dtype_size(info.dtype);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < numel; ++i) dst[i] = decode(src + step * static_cast<size_t>(i), info.dtype);
  }
  check_finite(out, *file, name);
  return out;
}

Tensor gather_to_f32(const std::shared_ptr<MappedFile>& file, uint64_t base, int64_t element_offset,
                     const std::vector<int64_t>& stride, const TensorInfo& info, const std::string& name) {
  reject_packed(info, *file, name);
  Tensor out = Tensor::zeros(info.shape);
  const int64_t numel = out.numel();
  const size_t dims = info.shape.size();
  const size_t step = dtype_size(info.dtype);
  std::vector<int64_t> index(dims, 0);
  int64_t at = element_offset;  // the source element of `index`, kept incrementally like an odometer
  for (int64_t i = 0; i < numel; ++i) {
    out.data[i] = decode(file->data() + base + step * static_cast<uint64_t>(at), info.dtype);
    for (size_t d = dims; d-- > 0;) {
      if (++index[d] < info.shape[d]) {
        at += stride[d];
        break;
      }
      at -= (info.shape[d] - 1) * stride[d];
      index[d] = 0;
    }
  }
  check_finite(out, *file, name);
  return out;
}

}  // namespace baq
