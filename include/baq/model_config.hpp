#pragma once
#include <string>

namespace baq {

enum class Architecture { Llama, Opt };

// Where the two halves of a rotary pair live inside a head: llama2.c/Meta/GGUF rotate adjacent
// pairs (2i, 2i+1); Hugging Face permutes q/k rows so that it rotates (i, i + head_dim/2).
enum class RopeStyle { Interleaved, RotateHalf };

struct ModelConfig {
  Architecture arch = Architecture::Llama;
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int max_seq_len = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::Interleaved;
  bool tied_embeddings = true;
  int bos_id = 1;
  int eos_id = 2;

  int head_dim() const { return dim / n_heads; }
  int kv_dim() const { return n_kv_heads * head_dim(); }
  std::string arch_name() const { return arch == Architecture::Llama ? "llama" : "opt"; }
};

// Validates the numbers a forward pass relies on; throws baq::Error naming `source`.
void validate_config(const ModelConfig& config, const std::string& source);

}  // namespace baq
