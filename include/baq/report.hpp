#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "baq/calibrate.hpp"

namespace baq {

struct RunContext {
  std::string model;
  std::string calibration_file;
  int nsamples = 0;
  int seqlen = 0;
  uint64_t seed = 0;
  int64_t calibration_text_tokens = 0;
  // Filled when the run was evaluated (`baq quantize --eval`): perplexity and KLD against the original.
  bool evaluated = false;
  std::string eval_text;
  std::string eval_protocol;
  int eval_seqlen = 0;
  int64_t eval_tokens = 0;
  double ppl = 0, reference_ppl = 0, kld_mean = 0, top1_agreement = 0;
};

// Checks every field the HTML page reads from a parsed report; `name` (its file) is named in errors.
void validate_run_report(const nlohmann::json& report, const std::string& name);

// One self-contained HTML page (inline SVG, no scripts or external files) from one or more run
// reports: bits per column of every layer as a heat map, GPTQ vs BAQ loss per layer, and perplexity
// against bits per weight across the runs that were evaluated. `names` label the runs.
std::string html_report(const std::vector<std::string>& report_json, const std::vector<std::string>& names);

// The JSON report of a quantization run: settings, per layer (Hessian trace, losses, damping, time)
// and the exact bit accounting; under MPI each rank's windows and stage times. Everything but the
// "seconds" and "*_seconds" fields is deterministic.
std::string quantize_report_json(const QuantizeRun& run, const QuantizeOptions& options, const RunContext& context);

}  // namespace baq
