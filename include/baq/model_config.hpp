#pragma once
// What a forward pass needs to know about a model, whatever its family and file format: widths,
// norms, activation, attention (rotary scaling, windows, soft-caps, biases), embeddings and head. A
// family's config reader (family.hpp) fills it from config.json or GGUF metadata; the one transformer
// block (model/) runs it.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace baq {

struct Family;

enum class NormKind {
  Rms,         // x / rms(x) · w
  RmsPlusOne,  // x / rms(x) · (1 + w)   (Gemma's checkpoints)
  Layer,       // (x − mean) / std · w + b
};
enum class Activation { Silu, GeluTanh, Gelu, Relu };

// Where the two halves of a rotary pair live inside a head: llama2.c/Meta/GGUF-llama rotate adjacent
// pairs (2i, 2i+1); Hugging Face rotates (i, i + head_dim/2).
enum class RopeStyle { Interleaved, RotateHalf };

struct RopeScaling {
  std::string type;  // "" (none), "linear" or "llama3"
  double factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int original_max_position = 0;
};

struct ModelConfig {
  const Family* family = nullptr;
  int dim = 0;         // hidden size (the residual stream)
  int hidden_dim = 0;  // MLP intermediate size
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_size = 0;   // per head; q is n_heads·head_size wide, which need not be dim
  int vocab_size = 0;
  int max_seq_len = 0;
  int embed_dim = 0;   // token embedding width: dim, or OPT's word_embed_proj_dim (project_in/out)

  NormKind norm = NormKind::Rms;
  float norm_eps = 1e-5f;
  Activation activation = Activation::Silu;
  bool gated_mlp = true;        // act(gate)·up, else fc2(act(fc1))
  bool fused_qkv = false;       // one qkv_proj (Phi-3)
  bool fused_gate_up = false;   // one gate_up_proj (Phi-3): gate rows first
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  bool pre_norm = true;         // false: OPT-350m's post-LN (norm after the residual add)
  bool sandwich_norm = false;   // Gemma 2: a second norm on each sub-block's output
  bool final_norm = true;       // OPT-350m has none

  bool rotary = true;           // else learned positions (OPT, offset 2)
  RopeStyle rope_style = RopeStyle::RotateHalf;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  std::vector<float> rope_freq_factors;  // GGUF rope_freqs: each frequency divided by its factor

  float embed_scale = 1.0f;      // Gemma: √dim
  float attn_scale = 0.0f;       // 0: 1/√head_size
  float attn_softcap = 0.0f;     // Gemma 2: cap·tanh(score/cap); 0 = none
  float final_softcap = 0.0f;    // Gemma 2 logits
  std::vector<int> window;       // per layer: keys a query sees (itself included); 0 = all

  bool tied_embeddings = true;
  int bos_id = 1;
  std::vector<int> eos_ids = {2};

  int head_dim() const { return head_size; }
  int q_dim() const { return n_heads * head_size; }
  int kv_dim() const { return n_kv_heads * head_size; }
  int eos_id() const { return eos_ids.empty() ? -1 : eos_ids.front(); }
  std::string arch_name() const;
  // Every rotary frequency (head_size/2 of them), scaling applied: what positions multiply.
  std::vector<float> rope_frequencies() const;
  // The fields that shape the math, as "name value" lines for `baq info`.
  std::vector<std::string> describe() const;
};

// Validates the numbers a forward pass relies on; throws baq::Error naming `source`.
void validate_config(const ModelConfig& config, const std::string& source);

// baq's own lossless serialization (stored in .baq files), read back by model_config_from_json.
nlohmann::json model_config_to_json(const ModelConfig& config);
ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& source);

}  // namespace baq
