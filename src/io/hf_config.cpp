#include <nlohmann/json.hpp>

#include "baq/error.hpp"
#include "baq/io.hpp"

namespace baq {

namespace {

int get_int(const nlohmann::json& j, const char* key, const std::string& path) {
  return static_cast<int>(json_int(j, key, path, 1, 1 << 24));
}

}  // namespace

ModelConfig read_hf_config(const std::string& path) { return parse_hf_config(read_json_file(path), path); }

ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object()) fail("{}: config is not a JSON object", path);
  std::string arch_name;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    arch_name = j["architectures"][0].get<std::string>();
  const std::string model_type = j.value("model_type", "");

  ModelConfig c;
  c.bos_id = j.contains("bos_token_id") && j["bos_token_id"].is_number_integer() ? j["bos_token_id"].get<int>() : 1;
  c.eos_id = j.contains("eos_token_id") && j["eos_token_id"].is_number_integer() ? j["eos_token_id"].get<int>() : 2;
  const bool llama_family = arch_name == "LlamaForCausalLM" || arch_name == "MistralForCausalLM" ||
                            (arch_name.empty() && (model_type == "llama" || model_type == "mistral"));
  if (llama_family) {
    c.arch = Architecture::Llama;
    c.dim = get_int(j, "hidden_size", path);
    c.hidden_dim = get_int(j, "intermediate_size", path);
    c.n_layers = get_int(j, "num_hidden_layers", path);
    c.n_heads = get_int(j, "num_attention_heads", path);
    c.n_kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                       ? get_int(j, "num_key_value_heads", path)
                       : c.n_heads;
    c.vocab_size = get_int(j, "vocab_size", path);
    c.max_seq_len = get_int(j, "max_position_embeddings", path);
    c.norm_eps = j.value("rms_norm_eps", 1e-6f);
    c.rope_theta = j.value("rope_theta", 10000.0f);
    c.tied_embeddings = j.value("tie_word_embeddings", false);
    c.rope_style = RopeStyle::RotateHalf;
    if (j.value("hidden_act", std::string("silu")) != "silu")
      fail("{}: hidden_act '{}' is not supported (Llama family uses silu)", path, j["hidden_act"].dump());
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
      fail("{}: rope_scaling is not supported yet", path);
    if (j.contains("head_dim") && j["head_dim"].is_number_integer() && j["head_dim"].get<int>() * c.n_heads != c.dim)
      fail("{}: head_dim {} x heads {} differs from hidden_size {}: not supported", path, j["head_dim"].get<int>(),
           c.n_heads, c.dim);
    if (j.contains("sliding_window") && j["sliding_window"].is_number_integer() &&
        j["sliding_window"].get<int>() < c.max_seq_len)
      fail("{}: sliding-window attention is not supported", path);
  } else if (arch_name == "OPTForCausalLM" || (arch_name.empty() && model_type == "opt")) {
    c.arch = Architecture::Opt;
    c.dim = get_int(j, "hidden_size", path);
    c.hidden_dim = get_int(j, "ffn_dim", path);
    c.n_layers = get_int(j, "num_hidden_layers", path);
    c.n_heads = get_int(j, "num_attention_heads", path);
    c.n_kv_heads = c.n_heads;
    c.vocab_size = get_int(j, "vocab_size", path);
    c.max_seq_len = get_int(j, "max_position_embeddings", path);
    c.norm_eps = 1e-5f;
    c.tied_embeddings = j.value("tie_word_embeddings", true);
    if (!j.value("do_layer_norm_before", true))
      fail("{}: OPT with do_layer_norm_before=false (opt-350m) is not supported", path);
    if (j.contains("word_embed_proj_dim") && j["word_embed_proj_dim"].is_number_integer() &&
        j["word_embed_proj_dim"].get<int>() != c.dim)
      fail("{}: OPT with word_embed_proj_dim != hidden_size is not supported", path);
    if (j.value("activation_function", std::string("relu")) != "relu")
      fail("{}: OPT activation '{}' is not supported", path, j["activation_function"].dump());
  } else {
    fail("{}: unknown architecture '{}' (supported: LlamaForCausalLM, MistralForCausalLM, OPTForCausalLM)", path,
         arch_name.empty() ? model_type : arch_name);
  }
  validate_config(c, path);
  return c;
}

std::string hf_config_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  if (c.arch == Architecture::Llama) {
    j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", c.dim},
         {"intermediate_size", c.hidden_dim}, {"num_hidden_layers", c.n_layers}, {"num_attention_heads", c.n_heads},
         {"num_key_value_heads", c.n_kv_heads}, {"vocab_size", c.vocab_size},
         {"max_position_embeddings", c.max_seq_len}, {"rms_norm_eps", c.norm_eps}, {"rope_theta", c.rope_theta},
         {"tie_word_embeddings", c.tied_embeddings}, {"hidden_act", "silu"}};
  } else {
    j = {{"architectures", {"OPTForCausalLM"}}, {"model_type", "opt"}, {"hidden_size", c.dim},
         {"ffn_dim", c.hidden_dim}, {"num_hidden_layers", c.n_layers}, {"num_attention_heads", c.n_heads},
         {"vocab_size", c.vocab_size}, {"max_position_embeddings", c.max_seq_len}, {"do_layer_norm_before", true},
         {"word_embed_proj_dim", c.dim}, {"activation_function", "relu"},
         {"tie_word_embeddings", c.tied_embeddings}};
  }
  j["bos_token_id"] = c.bos_id;
  j["eos_token_id"] = c.eos_id;
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

}  // namespace baq
