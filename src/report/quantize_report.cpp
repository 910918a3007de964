#include <nlohmann/json.hpp>

#include "baq/report.hpp"

namespace baq {

std::string quantize_report_json(const QuantizeRun& run, const QuantizeOptions& options, const RunContext& ctx) {
  const QuantSettings& s = options.settings;
  nlohmann::ordered_json j;
  j["tool"] = "baq 0.1.0";
  j["model"] = ctx.model;
  j["method"] = method_name(options.method);
  j["settings"] = {{"bits", s.bits},           {"group_size", s.group_size}, {"sym", s.sym},
                   {"damp", s.damp},           {"block_size", s.block_size}, {"act_order", s.act_order}};
  j["calibration"] = {{"file", ctx.calibration_file}, {"nsamples", ctx.nsamples}, {"seqlen", ctx.seqlen},
                      {"seed", ctx.seed},             {"text_tokens", ctx.calibration_text_tokens}};
  auto& layers = j["layers"] = nlohmann::ordered_json::array();
  double loss = 0, proxy = 0;
  for (const LayerRecord& r : run.layers) {
    layers.push_back({{"name", r.name},
                      {"rows", r.rows},
                      {"cols", r.cols},
                      {"groups_per_row", r.n_groups},
                      {"hessian_trace", r.hessian_trace},
                      {"gptq_loss", r.loss},
                      {"proxy_loss", r.proxy_loss},
                      {"damp", r.damp},
                      {"damp_retries", r.damp_retries},
                      {"seconds", r.seconds}});
    loss += r.loss;
    proxy += r.proxy_loss;
  }
  j["totals"] = {{"quantized_weights", run.quantized_weights},
                 {"code_bits", run.code_bits},
                 {"scale_bits", run.scale_bits},
                 {"zero_point_bits", run.zero_bits},
                 {"bits_per_weight", run.bits_per_weight()},
                 {"gptq_loss", loss},
                 {"proxy_loss", proxy},
                 {"seconds", run.seconds}};
  return j.dump(2) + "\n";
}

}  // namespace baq
