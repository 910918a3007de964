// The format table: every (range storage, code layout) pair, shared by the solver (which rounds
// ranges as the row stores them), the packer, the .baq file and the kernels.
#include "baq/error.hpp"
#include "pack/code_layouts.hpp"

namespace baq {

const std::vector<QuantFormat>& quant_formats() {
  static const std::vector<QuantFormat> rows = {
      {"f16-radix", RangeKind::F16, CodeKind::Radix, radix_accepts, radix_row_bits, radix_pack_row, radix_unpack_row,
       radix_matvec_rows, nullptr},
      {"f16-planes", RangeKind::F16, CodeKind::Planes, planes_accepts, planes_row_bits, planes_pack_row,
       planes_unpack_row, planes_matvec_rows, planes_decode_rows},
      {"scaled8-radix", RangeKind::Scaled8, CodeKind::Radix, radix_accepts, radix_row_bits, radix_pack_row,
       radix_unpack_row, radix_matvec_rows, nullptr},
      {"scaled8-planes", RangeKind::Scaled8, CodeKind::Planes, planes_accepts, planes_row_bits, planes_pack_row,
       planes_unpack_row, planes_matvec_rows, planes_decode_rows},
  };
  return rows;
}

const QuantFormat& quant_format(RangeKind ranges, CodeKind codes) {
  for (const QuantFormat& f : quant_formats())
    if (f.ranges == ranges && f.codes == codes) return f;
  fail("no quantization format stores these ranges and codes");
}

const QuantFormat& quant_format_named(const std::string& name) {
  std::string known;
  for (const QuantFormat& f : quant_formats()) {
    if (f.name == name) return f;
    known += (known.empty() ? "" : ", ") + f.name;
  }
  fail("unknown quantization format '{}' ({})", name, known);
}

}  // namespace baq
