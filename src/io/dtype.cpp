#include <cstring>

#include "baq/io.hpp"

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

}  // namespace baq
