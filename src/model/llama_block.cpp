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
    return Linear{name, load_checked(src, layer_name(index, suffix), {out, in}), {}};
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

void LlamaBlock::forward(float* x, BatchShape shape, LinearObserver* observer) const {
  const int64_t rows = shape.rows(), dim = config_.dim, kv = config_.kv_dim(), hidden = config_.hidden_dim;
  std::vector<float> xn(static_cast<size_t>(rows * dim)), q(xn.size()), att(xn.size()), o(xn.size());
  std::vector<float> k(static_cast<size_t>(rows * kv)), v(k.size());
  auto apply = [&](const Linear& l, const float* in, float* out) {
    if (observer != nullptr) observer->observe(index_, l, in, rows);
    kernels::linear(in, rows, l, out);
  };

  kernels::rmsnorm(x, attn_norm_.data, rows, dim, config_.norm_eps, xn.data());
  apply(q_, xn.data(), q.data());
  apply(k_, xn.data(), k.data());
  apply(v_, xn.data(), v.data());
  kernels::rope(q.data(), shape, config_.n_heads, *rope_, config_.rope_style);
  kernels::rope(k.data(), shape, config_.n_kv_heads, *rope_, config_.rope_style);
  kernels::attention(q.data(), k.data(), v.data(), shape, config_.n_heads, config_.n_kv_heads, config_.head_dim(),
                     1.0f / std::sqrt(static_cast<float>(config_.head_dim())), att.data());
  apply(o_, att.data(), o.data());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * dim; ++i) x[i] += o[static_cast<size_t>(i)];

  kernels::rmsnorm(x, mlp_norm_.data, rows, dim, config_.norm_eps, xn.data());
  std::vector<float> g(static_cast<size_t>(rows * hidden)), u(g.size());
  apply(gate_, xn.data(), g.data());
  apply(up_, xn.data(), u.data());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * hidden; ++i) {
    const float a = g[static_cast<size_t>(i)];
    g[static_cast<size_t>(i)] = a / (1.0f + std::exp(-a)) * u[static_cast<size_t>(i)];
  }
  apply(down_, g.data(), o.data());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * dim; ++i) x[i] += o[static_cast<size_t>(i)];
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
