// The family table: one row per architecture, and the readers of each one's config fields.
#include "baq/family.hpp"

#include <cmath>

#include "baq/error.hpp"
#include "baq/json.hpp"

namespace baq {

namespace {

// Keys that never change what a checkpoint computes (training, generation and bookkeeping fields).
const std::set<std::string>& harmless_keys() {
  static const std::set<std::string> keys = {
      "_name_or_path", "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache",
      "initializer_range", "init_std", "attention_dropout", "dropout", "activation_dropout", "embd_pdrop",
      "resid_pdrop", "layerdrop", "hidden_dropout", "pad_token_id", "auto_map", "pretraining_tp", "tokenizer_class",
      "cache_implementation", "prefix", "is_llama_config", "task_specific_params", "output_attentions",
      "output_hidden_states", "return_dict", "id2label", "label2id", "max_length", "min_length", "do_sample",
      "early_stopping", "num_beams", "temperature", "top_k", "top_p", "repetition_penalty", "length_penalty",
      "no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "use_bfloat16", "torchscript",
      "is_encoder_decoder", "is_decoder", "add_cross_attention", "tie_encoder_decoder", "chunk_size_feed_forward",
      "problem_type", "finetuning_task", "pruned_heads", "sep_token_id", "decoder_start_token_id",
      "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values", "output_scores", "return_dict_in_generate",
      "typical_p", "diversity_penalty", "num_beam_groups", "encoder_no_repeat_ngram_size", "begin_suppress_tokens",
      "suppress_tokens", "exponential_decay_length_penalty", "tf_legacy_loss", "cross_attention_hidden_size",
      // Read by transformers' generation or training code only; Hugging Face's forward ignores them.
      "rope_interleaved", "use_return_dict", "gradient_checkpointing"};
  return keys;
}

Activation activation_named(const std::string& name, const std::string& source, const char* key) {
  if (name == "silu" || name == "swish") return Activation::Silu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast") return Activation::GeluTanh;
  if (name == "gelu") return Activation::Gelu;
  if (name == "relu") return Activation::Relu;
  fail("{}: {} '{}' is not supported (silu, gelu, gelu_pytorch_tanh, relu)", source, key, name);
}

void read_special_ids(ConfigFields& f, ModelConfig& c) {
  c.bos_id = f.integer_or("bos_token_id", -1, 1 << 24, 1);
  if (f.has("eos_token_id")) {
    const nlohmann::json& e = f.raw("eos_token_id");
    c.eos_ids.clear();
    if (e.is_array()) {
      for (const auto& id : e) c.eos_ids.push_back(static_cast<int>(json_as_int(id, f.source() + ": field 'eos_token_id' entry", 0, 1 << 24)));
    } else {
      c.eos_ids.push_back(static_cast<int>(json_as_int(e, f.source() + ": field 'eos_token_id'", 0, 1 << 24)));
    }
  }
}

void read_rope_scaling(ConfigFields& f, ModelConfig& c) {
  if (!f.has("rope_scaling")) return;
  const nlohmann::json& r = f.raw("rope_scaling");
  const std::string what = f.source() + ": rope_scaling";
  if (!r.is_object()) fail("{}: must be an object or null", what);
  // transformers accepts the older key "type" for "rope_type".
  const std::string type = r.contains("rope_type") ? json_string(r, "rope_type", what) : json_string_or(r, "type", what, "");
  if (type == "default" || type.empty()) return;
  if (type == "linear") {
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = json_number(r, "factor", what);
  } else if (type == "llama3") {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = json_number(r, "factor", what);
    c.rope_scaling.low_freq_factor = json_number(r, "low_freq_factor", what);
    c.rope_scaling.high_freq_factor = json_number(r, "high_freq_factor", what);
    c.rope_scaling.original_max_position = static_cast<int>(json_int(r, "original_max_position_embeddings", what, 1, 1 << 30));
    if (!(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor))
      fail("{}: high_freq_factor must exceed low_freq_factor", what);
  } else {
    fail("{}: rope type '{}' is not supported (linear, llama3)", what, type);
  }
  if (!(c.rope_scaling.factor > 0)) fail("{}: factor must be positive", what);
}

// The fields every Llama-descended family shares (Llama, Mistral, Qwen2, Gemma, Phi-3).
void read_llama_like(ConfigFields& f, ModelConfig& c, bool tied_default) {
  c.dim = f.integer("hidden_size", 1, 1 << 24);
  c.hidden_dim = f.integer("intermediate_size", 1, 1 << 24);
  c.n_layers = f.integer("num_hidden_layers", 1, 1 << 16);
  c.n_heads = f.integer("num_attention_heads", 1, 1 << 16);
  c.n_kv_heads = f.integer_or("num_key_value_heads", 1, 1 << 16, c.n_heads);
  c.head_size = f.integer_or("head_dim", 1, 1 << 16, c.n_heads > 0 && c.dim % c.n_heads == 0 ? c.dim / c.n_heads : 0);
  if (c.head_size == 0) fail("{}: hidden_size {} is not a multiple of num_attention_heads {} and no head_dim is given", f.source(), c.dim, c.n_heads);
  c.vocab_size = f.integer("vocab_size", 1, 1 << 24);
  c.max_seq_len = f.integer("max_position_embeddings", 1, 1 << 30);
  c.embed_dim = c.dim;
  c.norm_eps = static_cast<float>(f.number_or("rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(f.number_or("rope_theta", 10000.0));
  c.tied_embeddings = f.boolean_or("tie_word_embeddings", tied_default);
  c.rope_style = RopeStyle::RotateHalf;
  read_rope_scaling(f, c);
  read_special_ids(f, c);
  if (f.has("partial_rotary_factor") && f.number_or("partial_rotary_factor", 1.0) != 1.0)
    fail("{}: partial_rotary_factor {} is not supported (rotary over whole heads only)", f.source(),
         f.number_or("partial_rotary_factor", 1.0));
  if (f.has("quantization_config"))
    fail("{}: the checkpoint is already quantized (quantization_config); baq quantizes full-precision checkpoints",
         f.source());
}

void read_silu(ConfigFields& f, ModelConfig& c) {
  c.activation = activation_named(f.string_or("hidden_act", "silu"), f.source(), "hidden_act");
  if (c.activation != Activation::Silu) fail("{}: hidden_act '{}' is not supported by this family (silu)", f.source(), f.string_or("hidden_act", ""));
}

void uniform_window(ModelConfig& c, int window) { c.window.assign(static_cast<size_t>(c.n_layers), window); }

void read_llama(ConfigFields& f, ModelConfig& c) {
  read_llama_like(f, c, false);
  read_silu(f, c);
  c.qkv_bias = c.o_bias = f.boolean_or("attention_bias", false);
  c.mlp_bias = f.boolean_or("mlp_bias", false);
}

void read_mistral(ConfigFields& f, ModelConfig& c) {
  read_llama_like(f, c, false);
  read_silu(f, c);
  if (f.has("sliding_window")) uniform_window(c, f.integer("sliding_window", 1, 1 << 30));
}

void read_qwen2(ConfigFields& f, ModelConfig& c) {
  read_llama_like(f, c, false);
  read_silu(f, c);
  c.qkv_bias = true;  // Qwen2's q, k and v projections always carry biases; o does not
  const bool sliding = f.boolean_or("use_sliding_window", false);
  const int window = f.has("sliding_window") ? f.integer("sliding_window", 1, 1 << 30) : 0;
  const int first = f.integer_or("max_window_layers", 0, 1 << 16, c.n_layers);
  if (f.has("layer_types")) {
    const nlohmann::json& types = f.raw("layer_types");
    if (!types.is_array() || static_cast<int>(types.size()) != c.n_layers)
      fail("{}: layer_types must list one type per layer", f.source());
    c.window.assign(static_cast<size_t>(c.n_layers), 0);
    for (int i = 0; i < c.n_layers; ++i) {
      const std::string t = json_as_string(types[static_cast<size_t>(i)], f.source() + ": layer_types entry");
      if (t == "sliding_attention") c.window[static_cast<size_t>(i)] = window;
      else if (t != "full_attention") fail("{}: layer type '{}' is not supported", f.source(), t);
    }
  } else if (sliding && window > 0) {
    c.window.assign(static_cast<size_t>(c.n_layers), 0);
    for (int i = first; i < c.n_layers; ++i) c.window[static_cast<size_t>(i)] = window;
  }
}

void read_gemma_common(ConfigFields& f, ModelConfig& c) {
  read_llama_like(f, c, true);
  c.norm = NormKind::RmsPlusOne;
  c.embed_scale = std::sqrt(static_cast<float>(c.dim));
  // hidden_activation decides when present; Gemma's checkpoints say "gelu" in hidden_act but were
  // trained with the tanh approximation, which transformers uses when hidden_activation is absent.
  const std::string act = f.string_or("hidden_act", "gelu_pytorch_tanh");
  c.activation = f.has("hidden_activation") ? activation_named(f.string_or("hidden_activation", ""), f.source(), "hidden_activation")
                                            : Activation::GeluTanh;
  (void)act;
  if (c.activation == Activation::Silu || c.activation == Activation::Relu)
    fail("{}: Gemma's activation must be a GELU", f.source());
  c.qkv_bias = c.o_bias = f.boolean_or("attention_bias", false);
}

void read_gemma(ConfigFields& f, ModelConfig& c) { read_gemma_common(f, c); }

void read_gemma2(ConfigFields& f, ModelConfig& c) {
  read_gemma_common(f, c);
  c.sandwich_norm = true;
  c.attn_softcap = static_cast<float>(f.number_or("attn_logit_softcapping", 0.0));
  c.final_softcap = static_cast<float>(f.number_or("final_logit_softcapping", 0.0));
  const double scalar = f.number_or("query_pre_attn_scalar", c.head_size);
  if (!(scalar > 0)) fail("{}: query_pre_attn_scalar must be positive", f.source());
  c.attn_scale = static_cast<float>(1.0 / std::sqrt(scalar));
  const int window = f.has("sliding_window") ? f.integer("sliding_window", 1, 1 << 30) : 0;
  c.window.assign(static_cast<size_t>(c.n_layers), 0);
  if (f.has("layer_types")) {
    const nlohmann::json& types = f.raw("layer_types");
    if (!types.is_array() || static_cast<int>(types.size()) != c.n_layers)
      fail("{}: layer_types must list one type per layer", f.source());
    for (int i = 0; i < c.n_layers; ++i) {
      const std::string t = json_as_string(types[static_cast<size_t>(i)], f.source() + ": layer_types entry");
      if (t == "sliding_attention") c.window[static_cast<size_t>(i)] = window;
      else if (t != "full_attention") fail("{}: layer type '{}' is not supported", f.source(), t);
    }
  } else {
    // Gemma 2 alternates: even layers local (sliding), odd layers global.
    for (int i = 0; i < c.n_layers; i += 2) c.window[static_cast<size_t>(i)] = window;
  }
}

void read_phi3(ConfigFields& f, ModelConfig& c) {
  read_llama_like(f, c, false);
  read_silu(f, c);
  c.fused_qkv = c.fused_gate_up = true;
  if (f.boolean_or("attention_bias", false)) fail("{}: Phi-3 with attention_bias is not supported", f.source());
  f.harmless({"original_max_position_embeddings"});  // read by the longrope scaling only, refused above
  if (f.has("sliding_window")) uniform_window(c, f.integer("sliding_window", 1, 1 << 30));
}

void read_opt(ConfigFields& f, ModelConfig& c) {
  c.dim = f.integer("hidden_size", 1, 1 << 24);
  c.hidden_dim = f.integer("ffn_dim", 1, 1 << 24);
  c.n_layers = f.integer("num_hidden_layers", 1, 1 << 16);
  c.n_heads = c.n_kv_heads = f.integer("num_attention_heads", 1, 1 << 16);
  if (c.dim % c.n_heads != 0) fail("{}: hidden_size {} is not a multiple of num_attention_heads {}", f.source(), c.dim, c.n_heads);
  c.head_size = c.dim / c.n_heads;
  c.vocab_size = f.integer("vocab_size", 1, 1 << 24);
  c.max_seq_len = f.integer("max_position_embeddings", 1, 1 << 30);
  c.embed_dim = f.integer_or("word_embed_proj_dim", 1, 1 << 24, c.dim);
  c.norm = NormKind::Layer;
  c.norm_eps = 1e-5f;
  c.gated_mlp = false;
  c.rotary = false;
  c.activation = activation_named(f.string_or("activation_function", "relu"), f.source(), "activation_function");
  c.pre_norm = f.boolean_or("do_layer_norm_before", true);
  c.final_norm = c.pre_norm && !f.boolean_or("_remove_final_layer_norm", false);
  c.qkv_bias = c.o_bias = c.mlp_bias = f.boolean_or("enable_bias", true);
  if (!f.boolean_or("layer_norm_elementwise_affine", true))
    fail("{}: OPT without elementwise-affine layer norms is not supported", f.source());
  c.tied_embeddings = f.boolean_or("tie_word_embeddings", true);
  read_special_ids(f, c);
  if (f.has("quantization_config"))
    fail("{}: the checkpoint is already quantized (quantization_config); baq quantizes full-precision checkpoints",
         f.source());
}

// GGUF: the keys llama.cpp writes under "<arch>.".
int gguf_count(const GgufMetadata& m, const std::string& key, int lo, int hi) {
  const double v = m.number(key);
  if (!(v >= lo && v <= hi) || v != std::floor(v)) fail("{}: metadata '{}' = {} is not an integer in {}..{}", m.path(), key, v, lo, hi);
  return static_cast<int>(v);
}

void read_gguf_common(const GgufMetadata& m, ModelConfig& c) {
  const std::string a = c.family->gguf_arch + ".";
  c.dim = gguf_count(m, a + "embedding_length", 1, 1 << 24);
  c.hidden_dim = gguf_count(m, a + "feed_forward_length", 1, 1 << 24);
  c.n_layers = gguf_count(m, a + "block_count", 1, 1 << 16);
  c.n_heads = gguf_count(m, a + "attention.head_count", 1, 1 << 16);
  c.n_kv_heads = m.has(a + "attention.head_count_kv") ? gguf_count(m, a + "attention.head_count_kv", 1, 1 << 16) : c.n_heads;
  c.head_size = m.has(a + "attention.key_length") ? gguf_count(m, a + "attention.key_length", 1, 1 << 16)
                : c.dim % c.n_heads == 0                ? c.dim / c.n_heads
                                                        : 0;
  if (c.head_size == 0) fail("{}: embedding_length is not a multiple of head_count and no key_length is given", m.path());
  if (m.has(a + "attention.value_length") && gguf_count(m, a + "attention.value_length", 1, 1 << 16) != c.head_size)
    fail("{}: value_length differs from key_length: not supported", m.path());
  if (m.has(a + "rope.dimension_count") && gguf_count(m, a + "rope.dimension_count", 1, 1 << 16) != c.head_size)
    fail("{}: rotary over part of each head (rope.dimension_count) is not supported", m.path());
  c.max_seq_len = gguf_count(m, a + "context_length", 1, 1 << 30);
  c.embed_dim = c.dim;
  c.norm_eps = m.has(a + "attention.layer_norm_rms_epsilon") ? static_cast<float>(m.number(a + "attention.layer_norm_rms_epsilon")) : 1e-5f;
  c.rope_theta = m.has(a + "rope.freq_base") ? static_cast<float>(m.number(a + "rope.freq_base")) : 10000.0f;
  if (m.has(a + "rope.scaling.type")) {
    const std::string type = m.string(a + "rope.scaling.type");
    if (type == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = m.number(a + "rope.scaling.factor");
    } else if (type != "none") {
      fail("{}: rope scaling '{}' is not supported (linear; llama3's is read from rope_freqs)", m.path(), type);
    }
  }
  c.rope_freq_factors = m.small_tensor("rope_freqs.weight");
  if (!c.rope_freq_factors.empty() && static_cast<int>(c.rope_freq_factors.size()) != c.head_size / 2)
    fail("{}: rope_freqs holds {} factors for {} rotary frequencies", m.path(), c.rope_freq_factors.size(), c.head_size / 2);
  c.bos_id = m.has("tokenizer.ggml.bos_token_id") ? gguf_count(m, "tokenizer.ggml.bos_token_id", 0, 1 << 24) : 1;
  c.eos_ids = {m.has("tokenizer.ggml.eos_token_id") ? gguf_count(m, "tokenizer.ggml.eos_token_id", 0, 1 << 24) : 2};
  if (m.has("tokenizer.ggml.eot_token_id")) {
    const int eot = gguf_count(m, "tokenizer.ggml.eot_token_id", 0, 1 << 24);
    if (eot != c.eos_ids.front()) c.eos_ids.push_back(eot);
  }
  const std::string window_key = a + "attention.sliding_window";
  if (m.has(window_key)) uniform_window(c, gguf_count(m, window_key, 1, 1 << 30));
}

std::map<Role, std::pair<std::string, std::string>> llama_modules() {
  return {{Role::Embed, {"model.embed_tokens", "token_embd"}},
          {Role::FinalNorm, {"model.norm", "output_norm"}},
          {Role::Head, {"lm_head", "output"}},
          {Role::RopeFreqs, {"", "rope_freqs"}},
          {Role::AttnNorm, {"model.layers.{}.input_layernorm", "blk.{}.attn_norm"}},
          {Role::MlpNorm, {"model.layers.{}.post_attention_layernorm", "blk.{}.ffn_norm"}},
          {Role::Q, {"model.layers.{}.self_attn.q_proj", "blk.{}.attn_q"}},
          {Role::K, {"model.layers.{}.self_attn.k_proj", "blk.{}.attn_k"}},
          {Role::V, {"model.layers.{}.self_attn.v_proj", "blk.{}.attn_v"}},
          {Role::O, {"model.layers.{}.self_attn.o_proj", "blk.{}.attn_output"}},
          {Role::Gate, {"model.layers.{}.mlp.gate_proj", "blk.{}.ffn_gate"}},
          {Role::Up, {"model.layers.{}.mlp.up_proj", "blk.{}.ffn_up"}},
          {Role::Down, {"model.layers.{}.mlp.down_proj", "blk.{}.ffn_down"}}};
}

std::vector<Family> make_families() {
  std::vector<Family> rows;
  auto gguf_llama_like = [](RopeStyle style) {
    return [style](const GgufMetadata& m, ModelConfig& c) {
      read_gguf_common(m, c);
      c.rope_style = style;
    };
  };

  Family llama{"llama", {"LlamaForCausalLM"}, {"llama"}, "llama", llama_modules(), read_llama, nullptr};
  // llama.cpp's converter permutes q/k rows back to Meta's interleaved pairs.
  llama.read_gguf = [](const GgufMetadata& m, ModelConfig& c) {
    read_gguf_common(m, c);
    c.rope_style = RopeStyle::Interleaved;
  };
  rows.push_back(llama);

  Family mistral{"mistral", {"MistralForCausalLM"}, {"mistral"}, "", llama_modules(), read_mistral, nullptr};
  rows.push_back(mistral);  // llama.cpp writes Mistral as "llama"

  Family qwen2{"qwen2", {"Qwen2ForCausalLM"}, {"qwen2"}, "qwen2", llama_modules(), read_qwen2, nullptr};
  qwen2.read_gguf = [](const GgufMetadata& m, ModelConfig& c) {
    read_gguf_common(m, c);
    c.rope_style = RopeStyle::RotateHalf;
    c.qkv_bias = true;
  };
  rows.push_back(qwen2);

  auto gemma_gguf = [](const GgufMetadata& m, ModelConfig& c) {
    read_gguf_common(m, c);
    c.rope_style = RopeStyle::RotateHalf;
    c.norm = NormKind::Rms;  // llama.cpp's converter stores Gemma's norm weights as 1 + w
    c.activation = Activation::GeluTanh;
    c.embed_scale = std::sqrt(static_cast<float>(c.dim));
    c.norm_eps = m.has(c.family->gguf_arch + ".attention.layer_norm_rms_epsilon") ? c.norm_eps : 1e-6f;
  };
  Family gemma{"gemma", {"GemmaForCausalLM"}, {"gemma"}, "gemma", llama_modules(), read_gemma, gemma_gguf};
  gemma.modules.erase(Role::RopeFreqs);
  rows.push_back(gemma);

  Family gemma2{"gemma2", {"Gemma2ForCausalLM"}, {"gemma2"}, "gemma2", llama_modules(), read_gemma2, nullptr};
  gemma2.modules.erase(Role::RopeFreqs);
  gemma2.modules[Role::PostAttnNorm] = {"model.layers.{}.post_attention_layernorm", "blk.{}.post_attention_norm"};
  gemma2.modules[Role::MlpNorm] = {"model.layers.{}.pre_feedforward_layernorm", "blk.{}.ffn_norm"};
  gemma2.modules[Role::PostMlpNorm] = {"model.layers.{}.post_feedforward_layernorm", "blk.{}.post_ffw_norm"};
  gemma2.read_gguf = [gemma_gguf](const GgufMetadata& m, ModelConfig& c) {
    gemma_gguf(m, c);
    c.sandwich_norm = true;
    const std::string a = c.family->gguf_arch + ".";
    c.attn_softcap = m.has(a + "attn_logit_softcapping") ? static_cast<float>(m.number(a + "attn_logit_softcapping")) : 0.0f;
    c.final_softcap = m.has(a + "final_logit_softcapping") ? static_cast<float>(m.number(a + "final_logit_softcapping")) : 0.0f;
    // No key holds query_pre_attn_scalar: llama.cpp takes hidden/heads for the 27B (46 layers) and
    // the head size otherwise, and so does this reader.
    c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.n_layers == 46 ? c.dim / c.n_heads : c.head_size));
    // Alternating local/global layers, as llama.cpp runs Gemma 2.
    const int window = c.window.empty() ? 0 : c.window.front();
    c.window.assign(static_cast<size_t>(c.n_layers), 0);
    for (int i = 0; i < c.n_layers; i += 2) c.window[static_cast<size_t>(i)] = window;
  };
  rows.push_back(gemma2);

  Family phi3{"phi3", {"Phi3ForCausalLM"}, {"phi3"}, "phi3", llama_modules(), read_phi3, nullptr};
  for (Role r : {Role::Q, Role::K, Role::V, Role::Gate, Role::Up, Role::RopeFreqs}) phi3.modules.erase(r);
  phi3.modules[Role::Qkv] = {"model.layers.{}.self_attn.qkv_proj", "blk.{}.attn_qkv"};
  phi3.modules[Role::GateUp] = {"model.layers.{}.mlp.gate_up_proj", "blk.{}.ffn_up"};
  phi3.read_gguf = [gguf_llama_like](const GgufMetadata& m, ModelConfig& c) {
    gguf_llama_like(RopeStyle::RotateHalf)(m, c);
    c.fused_qkv = c.fused_gate_up = true;
  };
  rows.push_back(phi3);

  Family opt{"opt", {"OPTForCausalLM"}, {"opt"}, "", {}, read_opt, nullptr};
  opt.modules = {{Role::Embed, {"model.decoder.embed_tokens", ""}},
                 {Role::Positions, {"model.decoder.embed_positions", ""}},
                 {Role::ProjectIn, {"model.decoder.project_in", ""}},
                 {Role::ProjectOut, {"model.decoder.project_out", ""}},
                 {Role::FinalNorm, {"model.decoder.final_layer_norm", ""}},
                 {Role::Head, {"lm_head", ""}},
                 {Role::AttnNorm, {"model.decoder.layers.{}.self_attn_layer_norm", ""}},
                 {Role::MlpNorm, {"model.decoder.layers.{}.final_layer_norm", ""}},
                 {Role::Q, {"model.decoder.layers.{}.self_attn.q_proj", ""}},
                 {Role::K, {"model.decoder.layers.{}.self_attn.k_proj", ""}},
                 {Role::V, {"model.decoder.layers.{}.self_attn.v_proj", ""}},
                 {Role::O, {"model.decoder.layers.{}.self_attn.out_proj", ""}},
                 {Role::Up, {"model.decoder.layers.{}.fc1", ""}},
                 {Role::Down, {"model.decoder.layers.{}.fc2", ""}}};
  rows.push_back(opt);
  return rows;
}

}  // namespace

std::string Family::tensor(Role role, int layer, bool gguf, const char* suffix) const {
  const auto it = modules.find(role);
  if (it == modules.end()) return {};
  const std::string& pattern = gguf ? it->second.second : it->second.first;
  if (pattern.empty()) return {};
  std::string name = pattern;
  if (const size_t at = name.find("{}"); at != std::string::npos) name.replace(at, 2, std::to_string(layer));
  return suffix[0] != '\0' ? name + "." + suffix : name;
}

const std::vector<Family>& families() {
  static const std::vector<Family> rows = make_families();
  return rows;
}

const Family& family_named(const std::string& name) {
  for (const Family& f : families())
    if (f.name == name) return f;
  fail("unknown model family '{}' (known: {})", name, supported_architectures());
}

const Family* family_for_hf(const std::string& architecture, const std::string& model_type) {
  for (const Family& f : families())
    for (const auto& a : f.hf_architectures)
      if (a == architecture) return &f;
  if (!architecture.empty()) return nullptr;
  for (const Family& f : families())
    for (const auto& t : f.hf_model_types)
      if (t == model_type) return &f;
  return nullptr;
}

const Family* family_for_gguf(const std::string& arch) {
  for (const Family& f : families())
    if (!f.gguf_arch.empty() && f.gguf_arch == arch) return &f;
  return nullptr;
}

std::string supported_architectures() {
  std::string out;
  for (const Family& f : families())
    for (const auto& a : f.hf_architectures) out += (out.empty() ? "" : ", ") + a;
  return out;
}

ConfigFields::ConfigFields(const nlohmann::json& j, std::string source) : j_(j), source_(std::move(source)) {
  if (!j_.is_object()) fail("{}: config is not a JSON object", source_);
}

bool ConfigFields::has(const std::string& key) {
  read_.insert(key);
  const auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

int ConfigFields::integer(const std::string& key, int lo, int hi) {
  read_.insert(key);
  return static_cast<int>(json_int(j_, key, source_, lo, hi));
}

int ConfigFields::integer_or(const std::string& key, int lo, int hi, int fallback) {
  read_.insert(key);
  return static_cast<int>(json_int_or(j_, key, source_, lo, hi, fallback));
}

double ConfigFields::number_or(const std::string& key, double fallback) {
  read_.insert(key);
  return json_number_or(j_, key, source_, fallback);
}

bool ConfigFields::boolean_or(const std::string& key, bool fallback) {
  read_.insert(key);
  return json_bool_or(j_, key, source_, fallback);
}

std::string ConfigFields::string_or(const std::string& key, const std::string& fallback) {
  read_.insert(key);
  return json_string_or(j_, key, source_, fallback);
}

const nlohmann::json& ConfigFields::raw(const std::string& key) {
  read_.insert(key);
  return json_field(j_, key, source_);
}

void ConfigFields::harmless(std::initializer_list<const char*> keys) {
  for (const char* k : keys) read_.insert(k);
}

void ConfigFields::refuse_unread() const {
  std::vector<std::string> unknown;
  for (const auto& [key, value] : j_.items())
    if (!read_.count(key) && !harmless_keys().count(key) && !value.is_null()) unknown.push_back(key);
  if (unknown.empty()) return;
  std::string list;
  for (const auto& k : unknown) list += (list.empty() ? "'" : ", '") + k + "'";
  fail("{}: config field{} {} not known to baq for this family; {} may change the model's math, so the model is "
       "refused rather than run wrong",
       source_, unknown.size() > 1 ? "s" : "", list + (unknown.size() > 1 ? " are" : " is"),
       unknown.size() > 1 ? "they" : "it");
}

ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object()) fail("{}: config is not a JSON object", path);
  std::string arch;
  if (j.contains("architectures")) {
    const nlohmann::json& a = j["architectures"];
    if (!a.is_array() || a.empty() || !a[0].is_string()) fail("{}: field 'architectures' must list architecture names", path);
    if (a.size() > 1) fail("{}: field 'architectures' lists {} architectures; one is expected", path, a.size());
    arch = a[0].get<std::string>();
  }
  const std::string model_type = json_string_or(j, "model_type", path, "");
  const Family* family = family_for_hf(arch, model_type);
  if (family == nullptr)
    fail("{}: unknown architecture '{}' (supported: {})", path, arch.empty() ? model_type : arch, supported_architectures());
  ModelConfig c;
  c.family = family;
  ConfigFields f(j, path);
  family->read_hf(f, c);
  f.refuse_unread();
  validate_config(c, path);
  return c;
}

ModelConfig read_hf_config(const std::string& path) { return parse_hf_config(read_json_file(path), path); }

ModelConfig read_gguf_config(const GgufMetadata& m) {
  const std::string arch = m.has("general.architecture") ? m.string("general.architecture") : "";
  const Family* family = family_for_gguf(arch);
  if (family == nullptr) {
    std::string known;
    for (const Family& f : families())
      if (!f.gguf_arch.empty()) known += (known.empty() ? "" : ", ") + f.gguf_arch;
    fail("{}: unknown architecture '{}' (GGUF: {} are read)", m.path(), arch, known);
  }
  ModelConfig c;
  c.family = family;
  family->read_gguf(m, c);
  return c;
}

std::string hf_config_json(const ModelConfig& c) {
  const Family& f = *c.family;
  nlohmann::ordered_json j = {{"architectures", {f.hf_architectures.front()}}, {"model_type", f.hf_model_types.front()}};
  if (f.name == "opt") {
    j.update({{"hidden_size", c.dim}, {"ffn_dim", c.hidden_dim}, {"num_hidden_layers", c.n_layers},
              {"num_attention_heads", c.n_heads}, {"vocab_size", c.vocab_size}, {"max_position_embeddings", c.max_seq_len},
              {"do_layer_norm_before", c.pre_norm}, {"word_embed_proj_dim", c.embed_dim},
              {"activation_function", "relu"}, {"enable_bias", c.qkv_bias}, {"tie_word_embeddings", c.tied_embeddings}});
    if (c.pre_norm && !c.final_norm) j["_remove_final_layer_norm"] = true;
  } else {
    if (c.norm == NormKind::Rms && f.name.starts_with("gemma"))
      fail("a Gemma model read from GGUF (norm weights stored as 1 + w) cannot be written as a Hugging Face folder");
    j.update({{"hidden_size", c.dim}, {"intermediate_size", c.hidden_dim}, {"num_hidden_layers", c.n_layers},
              {"num_attention_heads", c.n_heads}, {"num_key_value_heads", c.n_kv_heads}, {"head_dim", c.head_size},
              {"vocab_size", c.vocab_size}, {"max_position_embeddings", c.max_seq_len}, {"rms_norm_eps", c.norm_eps},
              {"rope_theta", c.rope_theta}, {"tie_word_embeddings", c.tied_embeddings}});
    if (!c.rope_freq_factors.empty())
      fail("a model with GGUF rope_freqs factors cannot be written as a Hugging Face folder");
    if (c.rope_scaling.type == "linear") {
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
    } else if (c.rope_scaling.type == "llama3") {
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", c.rope_scaling.factor},
                           {"low_freq_factor", c.rope_scaling.low_freq_factor},
                           {"high_freq_factor", c.rope_scaling.high_freq_factor},
                           {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
    }
    if (f.name == "llama") {
      j["hidden_act"] = "silu";
      j["attention_bias"] = c.qkv_bias;
      j["mlp_bias"] = c.mlp_bias;
    } else if (f.name == "mistral" || f.name == "phi3") {
      j["hidden_act"] = "silu";
      if (!c.window.empty() && c.window.front() > 0) j["sliding_window"] = c.window.front();
    } else if (f.name == "qwen2") {
      j["hidden_act"] = "silu";
      int first = c.n_layers, window = 0;
      for (int i = 0; i < c.n_layers && !c.window.empty(); ++i)
        if (c.window[static_cast<size_t>(i)] > 0) first = std::min(first, i), window = c.window[static_cast<size_t>(i)];
      j["use_sliding_window"] = window > 0;
      if (window > 0) j["sliding_window"] = window;
      j["max_window_layers"] = first;
    } else if (f.name == "gemma" || f.name == "gemma2") {
      j["hidden_activation"] = c.activation == Activation::Gelu ? "gelu" : "gelu_pytorch_tanh";
      j["attention_bias"] = c.qkv_bias;
      if (f.name == "gemma2") {
        j["attn_logit_softcapping"] = c.attn_softcap > 0 ? nlohmann::ordered_json(c.attn_softcap) : nlohmann::ordered_json();
        j["final_logit_softcapping"] = c.final_softcap > 0 ? nlohmann::ordered_json(c.final_softcap) : nlohmann::ordered_json();
        j["query_pre_attn_scalar"] = c.attn_scale > 0 ? 1.0 / (static_cast<double>(c.attn_scale) * c.attn_scale) : c.head_size;
        int window = 0;
        for (int w : c.window) window = std::max(window, w);
        if (window > 0) j["sliding_window"] = window;
      }
    }
  }
  j["bos_token_id"] = c.bos_id;
  if (c.eos_ids.size() == 1)
    j["eos_token_id"] = c.eos_ids.front();
  else
    j["eos_token_id"] = c.eos_ids;
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

}  // namespace baq
