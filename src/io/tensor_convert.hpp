#pragma once
#include <memory>
#include <string>
#include <vector>

#include "baq/io.hpp"

namespace baq {

// Turns `info.numel` elements at `offset` in `file` into an F32 tensor (a view when the bytes already
// are aligned F32) and rejects NaN/Inf, naming the tensor and the file.
Tensor convert_to_f32(const std::shared_ptr<MappedFile>& file, uint64_t offset, const TensorInfo& info,
                      const std::string& name);

// The same for a strided tensor (torch views): element (i0, i1, ...) sits at
// `base + (element_offset + Σ i_d·stride_d)·dtype_size`. Always a copy. The caller has checked the extent.
Tensor gather_to_f32(const std::shared_ptr<MappedFile>& file, uint64_t base, int64_t element_offset,
                     const std::vector<int64_t>& stride, const TensorInfo& info, const std::string& name);

}  // namespace baq
