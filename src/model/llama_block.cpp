#include <cmath>

#include "baq/error.hpp"
#include "model/blocks.hpp"

namespace baq {

namespace {
std::string layer_name(int index, const char* suffix) { return fmt::format("model.layers.{}.{}", index, suffix); }
}  // namespace

LlamaBlock::LlamaBlock(int index, const ModelConfig& c, const TensorSource& src,
                       std::shared_ptr<const kernels::RopeTable> rope)
    : Block(index), config_(c), rope_(std::move(rope)) {
  const int64_t dim = c.dim, kv = c.kv_dim(), hidden = c.hidden_dim;
  auto linear = [&](const char* name, const char* suffix, int64_t out, int64_t in) {
    return load_linear(src, name, layer_name(index, suffix), out, in);
  };
  attn_norm_ = load_checked(src, layer_name(index, "input_layernorm.weight"), {dim});
  mlp_norm_ = load_checked(src, layer_name(index, "post_attention_layernorm.weight"), {dim});
  q_ = linear("attn.q", "self_attn.q_proj.weight", dim, dim);
  k_ = linear("attn.k", "self_attn.k_proj.weight", kv, dim);
  v_ = linear("attn.v", "self_attn.v_proj.weight", kv, dim);
  o_ = linear("attn.o", "self_attn.o_proj.weight", dim, dim);
  gate_ = linear("mlp.gate", "mlp.gate_proj.weight", hidden, dim);
  up_ = linear("mlp.up", "mlp.up_proj.weight", hidden, dim);
  down_ = linear("mlp.down", "mlp.down_proj.weight", dim, hidden);
}

void LlamaBlock::forward(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache) const {
  const int64_t rows = shape.rows(), dim = config_.dim, kv = config_.kv_dim(), hidden = config_.hidden_dim;
  const auto n = static_cast<size_t>(rows * dim), nkv = static_cast<size_t>(rows * kv);
  float *xn = kernels::Scratch::get(1, n), *q = kernels::Scratch::get(2, n), *att = kernels::Scratch::get(3, n),
        *o = kernels::Scratch::get(4, n), *k = kernels::Scratch::get(5, nkv), *v = kernels::Scratch::get(6, nkv);
  auto apply = [&](const Linear& l, const float* in, float* out) {
    if (observer != nullptr) observer->observe(index_, l, in, rows);
    kernels::linear(in, rows, l, out);
  };

  kernels::rmsnorm(x, attn_norm_.data, rows, dim, config_.norm_eps, xn);
  apply(q_, xn, q);
  apply(k_, xn, k);
  apply(v_, xn, v);
  kernels::rope(q, shape, config_.n_heads, *rope_, config_.rope_style);
  kernels::rope(k, shape, config_.n_kv_heads, *rope_, config_.rope_style);
  kernels::attention(q, kernels::keys_values(k, v, shape, kv, cache), shape, config_.n_heads, config_.n_kv_heads,
                     config_.head_dim(), 1.0f / std::sqrt(static_cast<float>(config_.head_dim())), att);
  apply(o_, att, o);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * dim; ++i) x[i] += o[i];

  kernels::rmsnorm(x, mlp_norm_.data, rows, dim, config_.norm_eps, xn);
  float *g = kernels::Scratch::get(7, static_cast<size_t>(rows * hidden)),
        *u = kernels::Scratch::get(8, static_cast<size_t>(rows * hidden));
  apply(gate_, xn, g);
  apply(up_, xn, u);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * hidden; ++i) {
    const float a = g[i];
    g[i] = a / (1.0f + std::exp(-a)) * u[i];
  }
  apply(down_, g, o);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * dim; ++i) x[i] += o[i];
}

std::vector<std::pair<std::string, const Tensor*>> LlamaBlock::tensors() const {
  const int i = index_;
  return {{layer_name(i, "input_layernorm.weight"), &attn_norm_},
          {layer_name(i, "self_attn.q_proj.weight"), &q_.weight},
          {layer_name(i, "self_attn.k_proj.weight"), &k_.weight},
          {layer_name(i, "self_attn.v_proj.weight"), &v_.weight},
          {layer_name(i, "self_attn.o_proj.weight"), &o_.weight},
          {layer_name(i, "post_attention_layernorm.weight"), &mlp_norm_},
          {layer_name(i, "mlp.gate_proj.weight"), &gate_.weight},
          {layer_name(i, "mlp.up_proj.weight"), &up_.weight},
          {layer_name(i, "mlp.down_proj.weight"), &down_.weight}};
}

}  // namespace baq
