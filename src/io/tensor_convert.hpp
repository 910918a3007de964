#pragma once
#include <memory>
#include <string>

#include "baq/io.hpp"

namespace baq {

// Turns `info.numel` elements at `offset` in `file` into an F32 tensor (a view when the bytes already
// are aligned F32) and rejects NaN/Inf, naming the tensor and the file.
Tensor convert_to_f32(const std::shared_ptr<MappedFile>& file, uint64_t offset, const TensorInfo& info,
                      const std::string& name);

}  // namespace baq
