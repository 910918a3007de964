#pragma once
#include <memory>
#include <string>
#include <vector>

#include "baq/io.hpp"

namespace baq {

// The `info.numel` elements at `offset` in `file` as a tensor in their stored dtype: a view of the
// mapping (nothing is read until used), or an F32 copy when the bytes are not aligned for their type.
Tensor view_tensor(const std::shared_ptr<MappedFile>& file, uint64_t offset, const TensorInfo& info);

// A strided tensor (torch views): element (i0, i1, ...) sits at
// `base + (element_offset + Σ i_d·stride_d)·dtype_size`. Always an F32 copy. The caller has checked the extent.
Tensor gather_to_f32(const std::shared_ptr<MappedFile>& file, uint64_t base, int64_t element_offset,
                     const std::vector<int64_t>& stride, const TensorInfo& info);

}  // namespace baq
