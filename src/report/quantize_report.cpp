#include <nlohmann/json.hpp>

#include "baq/report.hpp"

namespace baq {

std::string quantize_report_json(const QuantizeRun& run, const QuantizeOptions& options, const RunContext& ctx) {
  const QuantSettings& s = options.settings;
  nlohmann::ordered_json j;
  j["tool"] = "baq 0.1.0";
  j["model"] = ctx.model;
  const bool baq = options.method == QuantMethod::Baq;
  j["method"] = method_name(options.method);
  j["settings"] = {{"group_size", s.group_size}, {"sym", s.sym},           {"damp", s.damp},
                   {"block_size", s.block_size}, {"act_order", s.act_order}};
  if (baq) {
    j["settings"]["rate"] = options.rate;
    j["settings"]["allocation"] = options.allocation == Allocation::Layer ? "layer" : "model";
  } else {
    j["settings"]["bits"] = s.bits;
  }
  j["settings"]["ranges"] = range_kind_name(s.ranges);
  j["settings"]["smooth_outliers"] = options.smooth_outliers;
  if (options.bpw > 0) j["settings"]["stored_bits_per_weight"] = options.bpw;
  auto outer = [](const std::optional<QuantSettings>& q) {
    return q ? nlohmann::ordered_json{{"bits", q->bits}, {"group_size", q->group_size}, {"ranges", range_kind_name(q->ranges)}}
             : nlohmann::ordered_json("as stored");
  };
  j["settings"]["head"] = outer(options.head);
  j["settings"]["embeddings"] = outer(options.embeddings);
  j["calibration"] = {{"file", ctx.calibration_file}, {"nsamples", ctx.nsamples}, {"seqlen", ctx.seqlen},
                      {"seed", ctx.seed},             {"text_tokens", ctx.calibration_text_tokens}};
  auto& layers = j["layers"] = nlohmann::ordered_json::array();
  double loss = 0, proxy = 0;
  auto storage = [](const StorageBits& b) {
    return nlohmann::ordered_json{{"codes", b.codes}, {"ranges", b.ranges}, {"widths", b.widths}, {"means", b.means}};
  };
  for (const LayerRecord& r : run.layers) {
    nlohmann::ordered_json l = {{"name", r.name},
                                {"rows", r.rows},
                                {"cols", r.cols},
                                {"groups_per_row", r.n_groups},
                                {"group_size", r.settings.group_size},
                                {"ranges", range_kind_name(r.settings.ranges)},
                                {"hessian_trace", r.hessian_trace},
                                {"code_bits_per_weight", r.bits},
                                {"bits_per_weight", r.storage.total() / static_cast<double>(r.rows * r.cols)},
                                {"storage_bits", storage(r.storage)},
                                {"gptq_loss", r.loss},
                                {"proxy_loss", r.proxy_loss},
                                {"damp", r.damp},
                                {"damp_retries", r.damp_retries},
                                {"input_smoothing", r.input_smoothing}};
    if (baq) {
      l["gptq_loss_uniform"] = r.loss_before;
      l["predicted_loss_ratio"] = r.predicted_loss_ratio;
      l["measured_loss_ratio"] = r.measured_loss_ratio;
      l["kept_uniform"] = r.baq_fell_back;
      if (r.sensitivity > 0.0) l["sensitivity"] = r.sensitivity;
      auto& hist = l["levels_histogram"] = nlohmann::ordered_json::object();
      for (const auto& [levels, count] : r.level_histogram) hist[std::to_string(levels)] = count;
      l["levels"] = r.levels;
    }
    l["seconds"] = r.seconds;
    layers.push_back(std::move(l));
    loss += r.loss;
    proxy += r.proxy_loss;
  }
  j["totals"] = {{"quantized_weights", run.quantized_weights},
                 {"storage_bits", storage(run.bits)},
                 {"code_bits_per_weight", run.code_bits_per_weight()},
                 {"bits_per_weight", run.bits_per_weight()},
                 {"gptq_loss", loss},
                 {"proxy_loss", proxy},
                 {"seconds", run.seconds}};
  if (const auto& check = run.allocation_check) {
    auto& c = j["allocation_check"] = {{"tokens", check->tokens}};
    if (check->model_wide_kld >= 0) c["model_wide_kld"] = check->model_wide_kld;
    if (check->per_layer_kld >= 0) c["per_layer_kld"] = check->per_layer_kld;
    if (check->uniform_kld >= 0) c["uniform_gptq_kld"] = check->uniform_kld;
    c["chosen"] = check->chosen;
  }
  // Wall seconds per stage of every rank (one for a plain run).
  auto& per_rank = j["ranks"] = nlohmann::ordered_json::array();
  for (size_t r = 0; r < run.ranks.size(); ++r) {
    const StageSeconds& st = run.ranks[r].stages;
    per_rank.push_back({{"rank", r},
                        {"windows", run.ranks[r].windows},
                        {"forward_seconds", st.forward},
                        {"hessian_seconds", st.hessian},
                        {"reduce_seconds", st.reduce},
                        {"solve_seconds", st.solve},
                        {"pack_seconds", st.pack},
                        {"broadcast_seconds", st.broadcast},
                        {"write_seconds", st.write}});
  }
  if (ctx.evaluated)
    j["evaluation"] = {{"text", ctx.eval_text},         {"protocol", ctx.eval_protocol},
                       {"seqlen", ctx.eval_seqlen},     {"predicted_tokens", ctx.eval_tokens},
                       {"ppl", ctx.ppl},                {"reference_ppl", ctx.reference_ppl},
                       {"kld_mean", ctx.kld_mean},      {"top1_agreement", ctx.top1_agreement}};
  return j.dump(2) + "\n";
}

}  // namespace baq
