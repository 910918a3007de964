#pragma once
#include <string>

#include "baq/calibrate.hpp"

namespace baq {

struct RunContext {
  std::string model;
  std::string calibration_file;
  int nsamples = 0;
  int seqlen = 0;
  uint64_t seed = 0;
  int64_t calibration_text_tokens = 0;
};

// The JSON report of a quantization run: settings, per layer (Hessian trace, losses, damping, time)
// and the exact bit accounting. Everything but the "seconds" fields is deterministic.
std::string quantize_report_json(const QuantizeRun& run, const QuantizeOptions& options, const RunContext& context);

}  // namespace baq
