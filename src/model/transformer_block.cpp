#include <algorithm>
#include <cmath>
#include <cstring>

#include "baq/error.hpp"
#include "baq/half.hpp"
#include "model/blocks.hpp"

namespace baq {

TransformerBlock::TransformerBlock(int index, const ModelConfig& c, const TensorSource& src,
                                   std::shared_ptr<const kernels::RopeTable> rope)
    : Block(index), config_(c), rope_(std::move(rope)) {
  const Family& f = *c.family;
  const bool gguf = src.naming() == TensorNaming::Gguf;
  const int64_t dim = c.dim, q = c.q_dim(), kv = c.kv_dim(), hidden = c.hidden_dim;
  auto norm = [&](Role role) {
    Norm n;
    if (!f.has(role)) return n;
    const std::string stored = f.tensor(role, index, gguf);
    if (stored.empty()) fail("{}: the {} family has no GGUF name for one of its norms", src.describe(), f.name);
    n.name = f.tensor(role, index, false);
    n.weight = load_checked(src, stored, {dim}, false);
    if (c.norm == NormKind::Layer) n.bias = load_checked(src, f.tensor(role, index, gguf, "bias"), {dim}, false);
    return n;
  };
  attn_norm_ = norm(Role::AttnNorm);
  mlp_norm_ = norm(Role::MlpNorm);
  if (c.sandwich_norm) {
    post_attn_norm_ = norm(Role::PostAttnNorm);
    post_mlp_norm_ = norm(Role::PostMlpNorm);
  }
  // Inputs: 0 the normed stream (q/k/v), 1 the attention output (o), 2 the normed stream again (MLP
  // in), 3 the MLP's hidden activation (down).
  auto linear = [&](const char* name, Role role, int64_t out, int64_t in, bool bias) {
    Linear l = load_linear(src, c, name, role, index, out, in, bias);
    l.input = role == Role::Q || role == Role::K || role == Role::V || role == Role::Qkv ? 0
              : role == Role::O                                                        ? 1
              : role == Role::Down                                                     ? 3
                                                                                       : 2;
    return l;
  };
  if (c.fused_qkv) {
    qkv_ = linear("attn.qkv", Role::Qkv, q + 2 * kv, dim, c.qkv_bias);
  } else {
    q_ = linear("attn.q", Role::Q, q, dim, c.qkv_bias);
    k_ = linear("attn.k", Role::K, kv, dim, c.qkv_bias);
    v_ = linear("attn.v", Role::V, kv, dim, c.qkv_bias);
  }
  o_ = linear("attn.o", Role::O, dim, q, c.o_bias);
  if (!c.gated_mlp) {
    up_ = linear("mlp.fc1", Role::Up, hidden, dim, c.mlp_bias);
    down_ = linear("mlp.fc2", Role::Down, dim, hidden, c.mlp_bias);
  } else {
    if (c.fused_gate_up) {
      gate_up_ = linear("mlp.gate_up", Role::GateUp, 2 * hidden, dim, c.mlp_bias);
    } else {
      gate_ = linear("mlp.gate", Role::Gate, hidden, dim, c.mlp_bias);
      up_ = linear("mlp.up", Role::Up, hidden, dim, c.mlp_bias);
    }
    down_ = linear("mlp.down", Role::Down, dim, hidden, c.mlp_bias);
  }
}

std::vector<Linear*> TransformerBlock::linears() {
  std::vector<Linear*> out;
  for (Linear* l : {&q_, &k_, &v_, &qkv_, &o_, &gate_, &up_, &gate_up_, &down_})
    if (!l->name.empty()) out.push_back(l);
  return out;
}

void divide_norm_channels(NormKind kind, Tensor& weight, Tensor& bias, std::vector<float>& scale) {
  // RMS(1 + w) scales by 1 + w: the stored w becomes (1 + w)/s − 1.
  const float offset = kind == NormKind::RmsPlusOne ? 1.0f : 0.0f;
  const Tensor w = weight.to_f32();
  Tensor out = Tensor::zeros(weight.shape);
  for (size_t c = 0; c < scale.size(); ++c) {
    // The scale is nudged so the new weight is a bfloat16 value: a BF16 checkpoint's norm then stays
    // 2 bytes a channel in the .baq, and the function is the same to float rounding.
    const float g = w.data[c] + offset, stored = round_to_bf16(g / scale[c] - offset), gain = stored + offset;
    if (g != 0.0f && gain != 0.0f && std::isfinite(g / gain)) {
      scale[c] = g / gain;
      out.data[c] = stored;
    } else {
      out.data[c] = g / scale[c] - offset;
    }
  }
  weight = std::move(out);
  if (!bias.empty()) {
    const Tensor b = bias.to_f32();
    Tensor nb = Tensor::zeros(bias.shape);
    for (size_t c = 0; c < scale.size(); ++c) nb.data[c] = b.data[c] / scale[c];
    bias = std::move(nb);
  }
}

bool TransformerBlock::norm_output_scalable(int input) const {
  // Pre-norm blocks: q/k/v (input 0) read the attention norm, the MLP's first linears (input 2) the
  // MLP norm. Post-norm blocks read the residual stream itself.
  if (!config_.pre_norm || (input != 0 && input != 2)) return false;
  return (input == 0 ? attn_norm_ : mlp_norm_).present();
}

bool TransformerBlock::scale_norm_output(int input, std::vector<float>& scale) {
  if (!norm_output_scalable(input) || static_cast<int64_t>(scale.size()) != config_.dim) return false;
  Norm& n = input == 0 ? attn_norm_ : mlp_norm_;
  divide_norm_channels(config_.norm, n.weight, n.bias, scale);
  return true;
}

std::vector<Tensor> TransformerBlock::smoothable_norms() const {
  return {attn_norm_.weight, attn_norm_.bias, mlp_norm_.weight, mlp_norm_.bias};
}

void TransformerBlock::restore_smoothable_norms(const std::vector<Tensor>& saved) {
  if (saved.size() != 4) fail("block {}: {} saved norm tensors, not 4", index_, saved.size());
  attn_norm_.weight = saved[0], attn_norm_.bias = saved[1], mlp_norm_.weight = saved[2], mlp_norm_.bias = saved[3];
}

void TransformerBlock::apply_norm(const Norm& n, const float* x, int64_t rows, float* out) const {
  kernels::norm(config_.norm, x, n.weight.data, n.bias.empty() ? nullptr : n.bias.data, rows, config_.dim,
                config_.norm_eps, out);
}

namespace {
void apply(const Linear& l, int block, LinearObserver* observer, const float* in, int64_t rows, float* out) {
  if (observer != nullptr) {
    observer->observe(block, l, in, rows);
    if (!observer->output_needed(block, l)) {
      std::fill_n(out, rows * l.out_features(), 0.0f);  // what follows reads defined values
      return;
    }
  }
  kernels::linear(in, rows, l, out);
}
}  // namespace

void TransformerBlock::attention(float* xn, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache,
                                 float* out) const {
  const ModelConfig& c = config_;
  const int64_t rows = shape.rows(), qd = c.q_dim(), kvd = c.kv_dim();
  float *q = kernels::Scratch::get(2, static_cast<size_t>(rows * qd)), *k = kernels::Scratch::get(5, static_cast<size_t>(rows * kvd)),
        *v = kernels::Scratch::get(6, static_cast<size_t>(rows * kvd));
  if (c.fused_qkv) {
    // One product for q, k and v (one input, one Hessian), split into the three buffers.
    const int64_t w = qd + 2 * kvd;
    float* qkv = kernels::Scratch::get(10, static_cast<size_t>(rows * w));
    apply(qkv_, index_, observer, xn, rows, qkv);
#pragma omp parallel for schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(q + r * qd, qkv + r * w, static_cast<size_t>(qd) * 4);
      std::memcpy(k + r * kvd, qkv + r * w + qd, static_cast<size_t>(kvd) * 4);
      std::memcpy(v + r * kvd, qkv + r * w + qd + kvd, static_cast<size_t>(kvd) * 4);
    }
  } else {
    apply(q_, index_, observer, xn, rows, q);
    apply(k_, index_, observer, xn, rows, k);
    apply(v_, index_, observer, xn, rows, v);
  }
  if (c.rotary) {
    kernels::rope(q, shape, c.n_heads, *rope_, c.rope_style);
    kernels::rope(k, shape, c.n_kv_heads, *rope_, c.rope_style);
  }
  const kernels::AttentionShape a{c.n_heads, c.n_kv_heads, c.head_size,
                                  c.attn_scale > 0 ? c.attn_scale : 1.0f / std::sqrt(static_cast<float>(c.head_size)),
                                  c.attn_softcap, c.window.empty() ? 0 : c.window[static_cast<size_t>(index_)]};
  float* att = kernels::Scratch::get(3, static_cast<size_t>(rows * qd));
  kernels::attention(q, kernels::keys_values(k, v, shape, kvd, cache), shape, a, att);
  apply(o_, index_, observer, att, rows, out);
}

void TransformerBlock::mlp(const float* xn, int64_t rows, LinearObserver* observer, float* out) const {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_dim;
  float* g = kernels::Scratch::get(7, static_cast<size_t>(rows * hidden));
  if (!c.gated_mlp) {
    apply(up_, index_, observer, xn, rows, g);
    kernels::activate(c.activation, g, rows * hidden);
  } else if (c.fused_gate_up) {
    float* gu = kernels::Scratch::get(8, static_cast<size_t>(rows * 2 * hidden));
    apply(gate_up_, index_, observer, xn, rows, gu);
#pragma omp parallel for schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
      const float* gr = gu + r * 2 * hidden;  // gate rows first, then up
      for (int64_t i = 0; i < hidden; ++i) g[r * hidden + i] = gr[i];
      kernels::gated(c.activation, g + r * hidden, gr + hidden, hidden);
    }
  } else {
    float* u = kernels::Scratch::get(8, static_cast<size_t>(rows * hidden));
    apply(gate_, index_, observer, xn, rows, g);
    apply(up_, index_, observer, xn, rows, u);
    kernels::gated(c.activation, g, u, rows * hidden);
  }
  apply(down_, index_, observer, g, rows, out);
}

void TransformerBlock::forward(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache) const {
  const int64_t rows = shape.rows(), dim = config_.dim;
  const auto n = static_cast<size_t>(rows * dim);
  float *xn = kernels::Scratch::get(1, n), *o = kernels::Scratch::get(4, n);
  auto residual = [&](const Norm& post, float* delta) {
    if (post.present()) apply_norm(post, delta, rows, delta);
#pragma omp parallel for schedule(static) if (rows > 1)
    for (int64_t i = 0; i < rows * dim; ++i) x[i] += delta[i];
  };
  if (config_.pre_norm) {
    apply_norm(attn_norm_, x, rows, xn);
    attention(xn, shape, observer, cache, o);
    residual(post_attn_norm_, o);
    apply_norm(mlp_norm_, x, rows, xn);
    mlp(xn, rows, observer, o);
    residual(post_mlp_norm_, o);
  } else {
    // Post-LN (OPT-350m): each sub-block reads the residual stream itself; the norm follows the add.
    std::memcpy(xn, x, n * sizeof(float));
    attention(xn, shape, observer, cache, o);
    residual(Norm{}, o);
    apply_norm(attn_norm_, x, rows, x);
    mlp(x, rows, observer, o);
    residual(Norm{}, o);
    apply_norm(mlp_norm_, x, rows, x);
  }
}

size_t TransformerBlock::token_work_size() const {
  const ModelConfig& c = config_;
  return static_cast<size_t>(2 * c.dim + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.hidden_dim);
}

void TransformerBlock::forward_token(float* x, KvCache::Layer& cache, int pos, float* work) const {
  // Every thread runs this; `single` sections do the small serial steps (each ends in a barrier),
  // matvec_team and attention_team share the heavy loops.
  const ModelConfig& c = config_;
  const int64_t dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), hidden = c.hidden_dim;
  float *xn = work, *qkv = xn + dim, *att = qkv + qd + 2 * kvd, *o = att + qd, *gu = o + dim;
  float *q = qkv, *k = qkv + qd, *v = qkv + qd + kvd;
  const BatchShape one{1, 1, pos};
  // Pre-norm without post-norms (Llama, Mistral, Qwen2, Phi-3, …): each thread normalises x into its
  // own copy and the output projections add into x in place, so neither the norms nor the residuals
  // are serial steps: three barriers per layer fewer of ten, which on a small model (kdoc-6.8M: six
  // layers, a token in ~0.4 ms) are a large part of the token.
  const bool own_norm = c.pre_norm && !post_attn_norm_.present() && !post_mlp_norm_.present();
  thread_local std::vector<float> own;
  if (own_norm) {
    if (own.size() < static_cast<size_t>(dim)) own.resize(static_cast<size_t>(dim));
    xn = own.data();
    apply_norm(attn_norm_, x, 1, xn);
  } else {
#pragma omp single
    {
      if (c.pre_norm) apply_norm(attn_norm_, x, 1, xn);
      else std::memcpy(xn, x, static_cast<size_t>(dim) * sizeof(float));
    }
  }

  // Attention.
  if (c.fused_qkv) kernels::matvec_team(xn, {{&qkv_, qkv}});
  else kernels::matvec_team(xn, {{&q_, q}, {&k_, k}, {&v_, v}});
#pragma omp single
  {
    if (c.rotary) {
      kernels::rope(q, one, c.n_heads, *rope_, c.rope_style);
      kernels::rope(k, one, c.n_kv_heads, *rope_, c.rope_style);
    }
    if (cache.k.capacity() == 0) {  // the whole context at once: no reallocation per token
      cache.k.reserve(static_cast<size_t>(c.max_seq_len) * static_cast<size_t>(kvd));
      cache.v.reserve(cache.k.capacity());
    }
    cache.k.insert(cache.k.end(), k, k + kvd);
    cache.v.insert(cache.v.end(), v, v + kvd);
  }
  const kernels::AttentionShape a{c.n_heads, c.n_kv_heads, c.head_size,
                                  c.attn_scale > 0 ? c.attn_scale : 1.0f / std::sqrt(static_cast<float>(c.head_size)),
                                  c.attn_softcap, c.window.empty() ? 0 : c.window[static_cast<size_t>(index_)]};
  kernels::attention_team(q, {cache.k.data(), cache.v.data(), pos + 1}, a, att);
  if (own_norm) {
    kernels::matvec_team(att, {{&o_, x, true}});
    apply_norm(mlp_norm_, x, 1, xn);
  } else {
    kernels::matvec_team(att, {{&o_, o}});
#pragma omp single
    {
      if (post_attn_norm_.present()) apply_norm(post_attn_norm_, o, 1, o);
      for (int64_t i = 0; i < dim; ++i) x[i] += o[i];
      if (c.pre_norm) apply_norm(mlp_norm_, x, 1, xn);
      else apply_norm(attn_norm_, x, 1, x);
    }
  }
  // MLP.
  const float* in = c.pre_norm ? xn : x;
  float *g = gu, *u = gu + hidden;
  if (!c.gated_mlp) {
    kernels::matvec_team(in, {{&up_, g}});
    kernels::activate_team(c.activation, g, hidden);
  } else if (c.fused_gate_up) {
    kernels::matvec_team(in, {{&gate_up_, gu}});
    kernels::gated_team(c.activation, g, u, hidden);
  } else {
    kernels::matvec_gated_team(in, gate_, up_, c.activation, g, u);
  }
  if (own_norm) {
    kernels::matvec_team(g, {{&down_, x, true}});
    return;
  }
  kernels::matvec_team(g, {{&down_, o}});
#pragma omp single
  {
    if (post_mlp_norm_.present()) apply_norm(post_mlp_norm_, o, 1, o);
    for (int64_t i = 0; i < dim; ++i) x[i] += o[i];
    if (!c.pre_norm) apply_norm(mlp_norm_, x, 1, x);
  }
}

std::vector<std::pair<std::string, const Tensor*>> TransformerBlock::tensors() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  auto norm = [&](const Norm& n) {
    if (!n.present()) return;
    out.emplace_back(n.name, &n.weight);
    if (!n.bias.empty()) out.emplace_back(n.name.substr(0, n.name.size() - 6) + "bias", &n.bias);
  };
  auto linear = [&](const Linear& l) {
    if (l.name.empty()) return;
    out.emplace_back(l.tensor, &l.weight);
    if (!l.bias.empty()) out.emplace_back(l.tensor.substr(0, l.tensor.size() - 6) + "bias", &l.bias);
  };
  norm(attn_norm_);
  linear(q_), linear(k_), linear(v_), linear(qkv_), linear(o_);
  norm(post_attn_norm_);
  norm(mlp_norm_);
  linear(gate_), linear(up_), linear(gate_up_), linear(down_);
  norm(post_mlp_norm_);
  return out;
}

}  // namespace baq
