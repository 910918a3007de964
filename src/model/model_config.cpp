#include "baq/model_config.hpp"

#include <cmath>

#include <fmt/format.h>

#include "baq/error.hpp"
#include "baq/family.hpp"
#include "baq/json.hpp"

namespace baq {

std::string ModelConfig::arch_name() const { return family != nullptr ? family->name : "?"; }

void validate_config(const ModelConfig& c, const std::string& source) {
  if (c.family == nullptr) fail("{}: no model family", source);
  auto positive = [&](int v, const char* what) {
    if (v <= 0 || v > (1 << 24)) fail("{}: {} = {} is out of range", source, what, v);
  };
  positive(c.dim, "dim");
  positive(c.hidden_dim, "hidden_dim");
  positive(c.n_layers, "n_layers");
  positive(c.n_heads, "n_heads");
  positive(c.n_kv_heads, "n_kv_heads");
  positive(c.head_size, "head_size");
  positive(c.vocab_size, "vocab_size");
  positive(c.max_seq_len, "max_seq_len");
  positive(c.embed_dim, "embed_dim");
  if (c.n_heads % c.n_kv_heads != 0)
    fail("{}: n_heads {} is not a multiple of n_kv_heads {}", source, c.n_heads, c.n_kv_heads);
  if (static_cast<int64_t>(c.n_heads) * c.head_size > (1 << 24)) fail("{}: heads × head size is out of range", source);
  if (c.rotary && c.head_size % 2 != 0) fail("{}: head size {} must be even for rotary embeddings", source, c.head_size);
  if (!(c.norm_eps > 0.0f) || !std::isfinite(c.norm_eps)) fail("{}: norm epsilon must be positive", source);
  if (!(c.rope_theta > 0.0f) || !std::isfinite(c.rope_theta)) fail("{}: rope theta must be positive", source);
  if (!c.window.empty() && static_cast<int>(c.window.size()) != c.n_layers)
    fail("{}: {} sliding windows for {} layers", source, c.window.size(), c.n_layers);
  for (int w : c.window)
    if (w < 0) fail("{}: a sliding window is negative", source);
  if (c.eos_ids.empty()) fail("{}: no end-of-sequence token", source);
  for (int id : c.eos_ids)
    if (id < 0 || id >= c.vocab_size) fail("{}: end-of-sequence token {} is outside the vocabulary", source, id);
  if (c.bos_id >= c.vocab_size) fail("{}: beginning-of-sequence token {} is outside the vocabulary", source, c.bos_id);
  if (!std::isfinite(c.attn_softcap) || c.attn_softcap < 0 || !std::isfinite(c.final_softcap) || c.final_softcap < 0)
    fail("{}: soft-caps must be finite and non-negative", source);
  if (c.fused_gate_up && !c.gated_mlp) fail("{}: a fused gate/up projection needs a gated MLP", source);
  if (!c.rotary && c.embed_dim != c.dim && c.family->has(Role::ProjectIn) == false)
    fail("{}: embedding width {} differs from hidden size {} without a projection", source, c.embed_dim, c.dim);
}

std::vector<float> ModelConfig::rope_frequencies() const {
  const int half = head_size / 2;
  std::vector<float> freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    // F32 as transformers and llama.cpp compute it: theta^(−2i/d).
    float f = 1.0f / std::pow(rope_theta, static_cast<float>(2 * i) / static_cast<float>(head_size));
    if (rope_scaling.type == "linear") {
      f /= static_cast<float>(rope_scaling.factor);
    } else if (rope_scaling.type == "llama3") {
      // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, the band between blended.
      const double factor = rope_scaling.factor, lo = rope_scaling.low_freq_factor, hi = rope_scaling.high_freq_factor;
      const double old_len = rope_scaling.original_max_position;
      const double wavelen = 2.0 * M_PI / f;
      const double low_wavelen = old_len / lo, high_wavelen = old_len / hi;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - lo) / (hi - lo);
        f = static_cast<float>((1.0 - smooth) * f / factor + smooth * f);
      }
    }
    if (!rope_freq_factors.empty()) f /= rope_freq_factors[static_cast<size_t>(i)];
    freq[static_cast<size_t>(i)] = f;
  }
  return freq;
}

std::vector<std::string> ModelConfig::describe() const {
  std::vector<std::string> out;
  const char* norms[] = {"RMSNorm", "RMSNorm (1 + w)", "LayerNorm"};
  const char* acts[] = {"SiLU", "GELU (tanh)", "GELU", "ReLU"};
  out.push_back(fmt::format("norm {} eps {:g}{}{}", norms[static_cast<int>(norm)], norm_eps,
                            pre_norm ? "" : ", after the residual (post-LN)", sandwich_norm ? ", also on each sub-block's output" : ""));
  out.push_back(fmt::format("mlp {}{}{}", gated_mlp ? "gated " : "", acts[static_cast<int>(activation)],
                            fused_gate_up ? " (fused gate_up)" : ""));
  out.push_back(fmt::format("attention {} heads / {} kv heads of {}{}, scale {:g}{}", n_heads, n_kv_heads, head_size,
                            fused_qkv ? " (fused qkv)" : "", attn_scale > 0 ? attn_scale : 1.0 / std::sqrt(head_size),
                            attn_softcap > 0 ? fmt::format(", score soft-cap {:g}", attn_softcap) : ""));
  std::string biases;
  if (qkv_bias) biases += " q/k/v";
  if (o_bias) biases += " o";
  if (mlp_bias) biases += " mlp";
  out.push_back("biases" + (biases.empty() ? std::string(" none") : biases));
  if (rotary) {
    std::string scaling = rope_scaling.type.empty() ? "none" : rope_scaling.type;
    if (rope_scaling.type == "linear") scaling += fmt::format(" factor {:g}", rope_scaling.factor);
    if (rope_scaling.type == "llama3")
      scaling += fmt::format(" factor {:g}, low {:g}, high {:g}, original context {}", rope_scaling.factor,
                             rope_scaling.low_freq_factor, rope_scaling.high_freq_factor, rope_scaling.original_max_position);
    if (!rope_freq_factors.empty()) scaling += " + GGUF rope_freqs factors";
    out.push_back(fmt::format("rotary {} theta {:g}, scaling {}", rope_style == RopeStyle::Interleaved ? "interleaved" : "rotate-half",
                              rope_theta, scaling));
  } else {
    out.push_back("positions learned (offset 2)");
  }
  std::string windows;
  int windowed = 0;
  for (size_t i = 0; i < window.size(); ++i)
    if (window[i] > 0) ++windowed;
  if (windowed == 0) windows = "none (full causal attention)";
  else if (windowed == n_layers) windows = fmt::format("{} keys in every layer", window.front());
  else {
    for (size_t i = 0; i < window.size(); ++i)
      if (window[i] > 0) windows += fmt::format("{}{}", windows.empty() ? "layers " : ",", i);
    windows += fmt::format(" ({} keys), the others full", *std::max_element(window.begin(), window.end()));
  }
  out.push_back("sliding window " + windows);
  if (embed_scale != 1.0f) out.push_back(fmt::format("embeddings scaled by {:g}", embed_scale));
  if (embed_dim != dim) out.push_back(fmt::format("embeddings {} wide, projected in and out of {}", embed_dim, dim));
  if (!final_norm) out.push_back("no final norm");
  if (final_softcap > 0) out.push_back(fmt::format("logit soft-cap {:g}", final_softcap));
  std::string eos;
  for (int id : eos_ids) eos += fmt::format("{}{}", eos.empty() ? "" : ", ", id);
  out.push_back(fmt::format("bos {} eos {}", bos_id, eos));
  return out;
}

nlohmann::json model_config_to_json(const ModelConfig& c) {
  return {{"family", c.family->name},
          {"dim", c.dim},
          {"hidden_dim", c.hidden_dim},
          {"n_layers", c.n_layers},
          {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads},
          {"head_size", c.head_size},
          {"vocab_size", c.vocab_size},
          {"max_seq_len", c.max_seq_len},
          {"embed_dim", c.embed_dim},
          {"norm", static_cast<int>(c.norm)},
          {"norm_eps", c.norm_eps},
          {"activation", static_cast<int>(c.activation)},
          {"gated_mlp", c.gated_mlp},
          {"fused_qkv", c.fused_qkv},
          {"fused_gate_up", c.fused_gate_up},
          {"qkv_bias", c.qkv_bias},
          {"o_bias", c.o_bias},
          {"mlp_bias", c.mlp_bias},
          {"pre_norm", c.pre_norm},
          {"sandwich_norm", c.sandwich_norm},
          {"final_norm", c.final_norm},
          {"rotary", c.rotary},
          {"rope_style", c.rope_style == RopeStyle::Interleaved ? "interleaved" : "rotate-half"},
          {"rope_theta", c.rope_theta},
          {"rope_scaling",
           {{"type", c.rope_scaling.type},
            {"factor", c.rope_scaling.factor},
            {"low_freq_factor", c.rope_scaling.low_freq_factor},
            {"high_freq_factor", c.rope_scaling.high_freq_factor},
            {"original_max_position", c.rope_scaling.original_max_position}}},
          {"rope_freq_factors", c.rope_freq_factors},
          {"embed_scale", c.embed_scale},
          {"attn_scale", c.attn_scale},
          {"attn_softcap", c.attn_softcap},
          {"final_softcap", c.final_softcap},
          {"window", c.window},
          {"tied_embeddings", c.tied_embeddings},
          {"bos_id", c.bos_id},
          {"eos_ids", c.eos_ids}};
}

ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& source) {
  const std::string what = source + ": model config";
  ModelConfig c;
  c.family = &family_named(json_string(j, "family", what));
  auto count = [&](const char* key) { return static_cast<int>(json_int(j, key, what, 1, 1 << 30)); };
  c.dim = count("dim");
  c.hidden_dim = count("hidden_dim");
  c.n_layers = count("n_layers");
  c.n_heads = count("n_heads");
  c.n_kv_heads = count("n_kv_heads");
  c.head_size = count("head_size");
  c.vocab_size = count("vocab_size");
  c.max_seq_len = count("max_seq_len");
  c.embed_dim = count("embed_dim");
  c.norm = static_cast<NormKind>(json_int(j, "norm", what, 0, 2));
  c.norm_eps = static_cast<float>(json_number(j, "norm_eps", what));
  c.activation = static_cast<Activation>(json_int(j, "activation", what, 0, 3));
  c.gated_mlp = json_bool(j, "gated_mlp", what);
  c.fused_qkv = json_bool(j, "fused_qkv", what);
  c.fused_gate_up = json_bool(j, "fused_gate_up", what);
  c.qkv_bias = json_bool(j, "qkv_bias", what);
  c.o_bias = json_bool(j, "o_bias", what);
  c.mlp_bias = json_bool(j, "mlp_bias", what);
  c.pre_norm = json_bool(j, "pre_norm", what);
  c.sandwich_norm = json_bool(j, "sandwich_norm", what);
  c.final_norm = json_bool(j, "final_norm", what);
  c.rotary = json_bool(j, "rotary", what);
  const std::string style = json_string(j, "rope_style", what);
  if (style != "interleaved" && style != "rotate-half") fail("{}: rope_style '{}' is not interleaved or rotate-half", what, style);
  c.rope_style = style == "interleaved" ? RopeStyle::Interleaved : RopeStyle::RotateHalf;
  c.rope_theta = static_cast<float>(json_number(j, "rope_theta", what));
  const nlohmann::json& rs = json_field(j, "rope_scaling", what);
  c.rope_scaling.type = json_string(rs, "type", what + " rope_scaling");
  if (!c.rope_scaling.type.empty() && c.rope_scaling.type != "linear" && c.rope_scaling.type != "llama3")
    fail("{}: rope scaling '{}' is not supported", what, c.rope_scaling.type);
  c.rope_scaling.factor = json_number(rs, "factor", what);
  c.rope_scaling.low_freq_factor = json_number(rs, "low_freq_factor", what);
  c.rope_scaling.high_freq_factor = json_number(rs, "high_freq_factor", what);
  c.rope_scaling.original_max_position = static_cast<int>(json_int(rs, "original_max_position", what, 0, 1 << 30));
  for (const auto& v : json_field(j, "rope_freq_factors", what)) {
    if (!v.is_number() || !(v.get<double>() > 0)) fail("{}: rope_freq_factors must be positive numbers", what);
    c.rope_freq_factors.push_back(v.get<float>());
  }
  c.embed_scale = static_cast<float>(json_number(j, "embed_scale", what));
  c.attn_scale = static_cast<float>(json_number(j, "attn_scale", what));
  c.attn_softcap = static_cast<float>(json_number(j, "attn_softcap", what));
  c.final_softcap = static_cast<float>(json_number(j, "final_softcap", what));
  for (const auto& v : json_field(j, "window", what)) c.window.push_back(static_cast<int>(json_as_int(v, what + " window", 0, 1 << 30)));
  c.tied_embeddings = json_bool(j, "tied_embeddings", what);
  c.bos_id = static_cast<int>(json_int(j, "bos_id", what, -1, 1 << 24));
  c.eos_ids.clear();
  for (const auto& v : json_field(j, "eos_ids", what)) c.eos_ids.push_back(static_cast<int>(json_as_int(v, what + " eos_ids", 0, 1 << 24)));
  validate_config(c, source);
  return c;
}

}  // namespace baq
