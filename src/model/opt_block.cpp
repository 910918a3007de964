#include <cmath>

#include "baq/error.hpp"
#include "model/blocks.hpp"

namespace baq {

OptBlock::OptBlock(int index, const ModelConfig& c, const TensorSource& src, const std::string& prefix)
    : Block(index), config_(c), prefix_(fmt::format("{}layers.{}.", prefix, index)) {
  const int64_t dim = c.dim, hidden = c.hidden_dim;
  auto name = [&](const char* suffix) { return prefix_ + suffix; };
  auto linear = [&](const char* lname, const char* module, int64_t out, int64_t in) {
    Linear l = load_linear(src, lname, name(module) + std::string(".weight"), out, in);
    l.bias = load_checked(src, name(module) + std::string(".bias"), {out});
    return l;
  };
  attn_norm_ = load_checked(src, name("self_attn_layer_norm.weight"), {dim});
  attn_norm_bias_ = load_checked(src, name("self_attn_layer_norm.bias"), {dim});
  mlp_norm_ = load_checked(src, name("final_layer_norm.weight"), {dim});
  mlp_norm_bias_ = load_checked(src, name("final_layer_norm.bias"), {dim});
  q_ = linear("attn.q", "self_attn.q_proj", dim, dim);
  k_ = linear("attn.k", "self_attn.k_proj", dim, dim);
  v_ = linear("attn.v", "self_attn.v_proj", dim, dim);
  o_ = linear("attn.o", "self_attn.out_proj", dim, dim);
  fc1_ = linear("mlp.fc1", "fc1", hidden, dim);
  fc2_ = linear("mlp.fc2", "fc2", dim, hidden);
}

void OptBlock::forward(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache) const {
  const int64_t rows = shape.rows(), dim = config_.dim, hidden = config_.hidden_dim;
  const auto n = static_cast<size_t>(rows * dim);
  float *xn = kernels::Scratch::get(1, n), *q = kernels::Scratch::get(2, n), *att = kernels::Scratch::get(3, n),
        *o = kernels::Scratch::get(4, n), *k = kernels::Scratch::get(5, n), *v = kernels::Scratch::get(6, n);
  auto apply = [&](const Linear& l, const float* in, float* out) {
    if (observer != nullptr) observer->observe(index_, l, in, rows);
    kernels::linear(in, rows, l, out);
  };
  kernels::layernorm(x, attn_norm_.data, attn_norm_bias_.data, rows, dim, config_.norm_eps, xn);
  apply(q_, xn, q);
  apply(k_, xn, k);
  apply(v_, xn, v);
  // OPT scales q after its bias; the same as scaling the scores.
  kernels::attention(q, kernels::keys_values(k, v, shape, dim, cache), shape, config_.n_heads, config_.n_heads,
                     config_.head_dim(), 1.0f / std::sqrt(static_cast<float>(config_.head_dim())), att);
  apply(o_, att, o);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * dim; ++i) x[i] += o[i];

  kernels::layernorm(x, mlp_norm_.data, mlp_norm_bias_.data, rows, dim, config_.norm_eps, xn);
  float* h = kernels::Scratch::get(7, static_cast<size_t>(rows * hidden));
  apply(fc1_, xn, h);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * hidden; ++i) h[i] = std::max(h[i], 0.0f);
  apply(fc2_, h, o);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * dim; ++i) x[i] += o[i];
}

std::vector<std::pair<std::string, const Tensor*>> OptBlock::tensors() const {
  return {{prefix_ + "self_attn.q_proj.weight", &q_.weight},     {prefix_ + "self_attn.q_proj.bias", &q_.bias},
          {prefix_ + "self_attn.k_proj.weight", &k_.weight},     {prefix_ + "self_attn.k_proj.bias", &k_.bias},
          {prefix_ + "self_attn.v_proj.weight", &v_.weight},     {prefix_ + "self_attn.v_proj.bias", &v_.bias},
          {prefix_ + "self_attn.out_proj.weight", &o_.weight},   {prefix_ + "self_attn.out_proj.bias", &o_.bias},
          {prefix_ + "self_attn_layer_norm.weight", &attn_norm_}, {prefix_ + "self_attn_layer_norm.bias", &attn_norm_bias_},
          {prefix_ + "fc1.weight", &fc1_.weight},                {prefix_ + "fc1.bias", &fc1_.bias},
          {prefix_ + "fc2.weight", &fc2_.weight},                {prefix_ + "fc2.bias", &fc2_.bias},
          {prefix_ + "final_layer_norm.weight", &mlp_norm_},     {prefix_ + "final_layer_norm.bias", &mlp_norm_bias_}};
}

}  // namespace baq
