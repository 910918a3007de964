#include "baq/model_config.hpp"

#include "baq/error.hpp"

namespace baq {

void validate_config(const ModelConfig& c, const std::string& source) {
  auto positive = [&](int v, const char* what) {
    if (v <= 0 || v > (1 << 24)) fail("{}: {} = {} is out of range", source, what, v);
  };
  positive(c.dim, "dim");
  positive(c.hidden_dim, "hidden_dim");
  positive(c.n_layers, "n_layers");
  positive(c.n_heads, "n_heads");
  positive(c.n_kv_heads, "n_kv_heads");
  positive(c.vocab_size, "vocab_size");
  positive(c.max_seq_len, "max_seq_len");
  if (c.dim % c.n_heads != 0) fail("{}: dim {} is not a multiple of n_heads {}", source, c.dim, c.n_heads);
  if (c.n_heads % c.n_kv_heads != 0)
    fail("{}: n_heads {} is not a multiple of n_kv_heads {}", source, c.n_heads, c.n_kv_heads);
  if (c.arch == Architecture::Llama && c.head_dim() % 2 != 0)
    fail("{}: head size {} must be even for rotary embeddings", source, c.head_dim());
  if (!(c.norm_eps > 0.0f)) fail("{}: norm epsilon must be positive", source);
}

}  // namespace baq
