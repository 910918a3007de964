// Every family a user brings, checked on tiny checkpoints this test writes in the family's exact
// Hugging Face layout (config.json keys as the hub ships them, tensor names as shipped, F32/F16/BF16):
// baq's logits equal an independent double-precision forward written here from the Hugging Face
// modeling equations (rotary with llama3/linear scaling, sliding windows, soft-caps, biases, fused
// projections, post-LN, embedding projections); the GGUF form llama.cpp would write gives the same
// logits; every feature is shown to matter (switching it off in the reference moves the logits);
// and each family quantizes with every method into a .baq that ppl and generate run.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>

#include "baq/baq_file.hpp"
#include "baq/calibrate.hpp"
#include "baq/model.hpp"
#include "baq/perplexity.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

namespace fs = std::filesystem;
using Vec = std::vector<double>;
using json = nlohmann::ordered_json;

// What the reference computes, set per family by the test (not read from baq's config code).
struct Spec {
  std::string family;
  int dim = 32, hidden = 40, layers = 2, heads = 4, kv_heads = 2, head_dim = 8, vocab = 300, context = 64;
  int embed_dim = 32;
  enum { Rms, RmsPlusOne, Layer } norm = Rms;
  double eps = 1e-5;
  enum { Silu, GeluTanh, Relu } act = Silu;
  bool gated = true, fused_qkv = false, fused_gate_up = false, qkv_bias = false, o_bias = false, mlp_bias = false;
  bool post_ln = false, sandwich = false, final_norm = true, rotary = true, tied = false;
  double theta = 10000;
  std::string scaling;  // "", "linear", "llama3"
  double factor = 1, low = 1, high = 4;
  int original = 0;
  double embed_scale = 1, attn_scale = 0, attn_cap = 0, final_cap = 0;
  std::vector<int> window;  // per layer, 0 = full
  json config;              // the config.json the hub would ship
};

// ---- weights under the hub's names ----

std::string L(int l, const std::string& rest, const std::string& root = "model.layers.") {
  return root + std::to_string(l) + "." + rest;
}

void weights_for(const Spec& s, uint32_t seed, Weights& w, Shapes& shapes) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double scale, double mean = 0.0) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    Vec v(static_cast<size_t>(n));
    for (auto& x : v) {  // BF16-representable, normal in F16 too, so every dtype holds the same numbers
      float f = static_cast<float>(mean + scale * normal(rng));
      if (std::abs(f) < 1e-4f) f = 0.0f;
      const uint32_t bits = static_cast<uint32_t>(f32_to_bf16(f)) << 16;
      std::memcpy(&f, &bits, 4);
      x = f;
    }
    w[name] = std::move(v);
    shapes[name] = std::move(shape);
  };
  const int64_t d = s.dim, h = s.hidden, q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim, V = s.vocab, E = s.embed_dim;
  const double sd = 1.0 / std::sqrt(static_cast<double>(d)), sh = 1.0 / std::sqrt(static_cast<double>(h));
  const double norm_mean = s.norm == Spec::RmsPlusOne ? 0.0 : 1.0;  // Gemma stores w in (1 + w)
  if (s.family == "opt") {
    const std::string root = "model.decoder.";
    add(root + "embed_tokens.weight", {V, E}, 1.0);
    add(root + "embed_positions.weight", {s.context + 2, d}, 0.3);
    if (E != d) {
      add(root + "project_in.weight", {d, E}, 1.0 / std::sqrt(static_cast<double>(E)));
      add(root + "project_out.weight", {E, d}, sd);
    }
    for (int l = 0; l < s.layers; ++l) {
      for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"}) {
        add(L(l, std::string(m) + ".weight", root + "layers."), {d, d}, sd);
        add(L(l, std::string(m) + ".bias", root + "layers."), {d}, 0.1);
      }
      for (const char* n : {"self_attn_layer_norm", "final_layer_norm"}) {
        add(L(l, std::string(n) + ".weight", root + "layers."), {d}, 0.1, 1.0);
        add(L(l, std::string(n) + ".bias", root + "layers."), {d}, 0.1);
      }
      add(L(l, "fc1.weight", root + "layers."), {h, d}, sd);
      add(L(l, "fc1.bias", root + "layers."), {h}, 0.1);
      add(L(l, "fc2.weight", root + "layers."), {d, h}, sh);
      add(L(l, "fc2.bias", root + "layers."), {d}, 0.1);
    }
    if (s.final_norm) {
      add(root + "final_layer_norm.weight", {d}, 0.1, 1.0);
      add(root + "final_layer_norm.bias", {d}, 0.1);
    }
    return;
  }
  add("model.embed_tokens.weight", {V, d}, s.embed_scale != 1 ? 0.2 : 1.0);
  for (int l = 0; l < s.layers; ++l) {
    add(L(l, "input_layernorm.weight"), {d}, 0.1, norm_mean);
    if (s.fused_qkv) {
      add(L(l, "self_attn.qkv_proj.weight"), {q + 2 * kv, d}, sd);
    } else {
      add(L(l, "self_attn.q_proj.weight"), {q, d}, sd);
      add(L(l, "self_attn.k_proj.weight"), {kv, d}, sd);
      add(L(l, "self_attn.v_proj.weight"), {kv, d}, sd);
      if (s.qkv_bias) {
        add(L(l, "self_attn.q_proj.bias"), {q}, 0.3);
        add(L(l, "self_attn.k_proj.bias"), {kv}, 0.3);
        add(L(l, "self_attn.v_proj.bias"), {kv}, 0.3);
      }
    }
    add(L(l, "self_attn.o_proj.weight"), {d, q}, 1.0 / std::sqrt(static_cast<double>(q)));
    if (s.o_bias) add(L(l, "self_attn.o_proj.bias"), {d}, 0.3);
    add(L(l, "post_attention_layernorm.weight"), {d}, 0.1, norm_mean);
    if (s.sandwich) {
      add(L(l, "pre_feedforward_layernorm.weight"), {d}, 0.1, norm_mean);
      add(L(l, "post_feedforward_layernorm.weight"), {d}, 0.1, norm_mean);
    }
    if (s.fused_gate_up) {
      add(L(l, "mlp.gate_up_proj.weight"), {2 * h, d}, sd);
    } else {
      add(L(l, "mlp.gate_proj.weight"), {h, d}, sd);
      add(L(l, "mlp.up_proj.weight"), {h, d}, sd);
    }
    add(L(l, "mlp.down_proj.weight"), {d, h}, sh);
    if (s.mlp_bias) {
      add(L(l, "mlp.gate_proj.bias"), {h}, 0.3);
      add(L(l, "mlp.up_proj.bias"), {h}, 0.3);
      add(L(l, "mlp.down_proj.bias"), {d}, 0.3);
    }
  }
  add("model.norm.weight", {d}, 0.1, norm_mean);
  if (!s.tied) add("lm_head.weight", {V, d}, sd);
}

// ---- the reference, from the Hugging Face modeling equations ----

Vec matvec(const Vec& m, int64_t rows, int64_t cols, const Vec& x, int64_t row0 = 0) {
  Vec y(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[r] += m[(row0 + r) * cols + c] * x[c];
  return y;
}
void add_to(Vec& x, const Vec& y) {
  for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
}

Vec norm(const Spec& s, const Vec& x, const Vec& g, const Vec* b) {
  Vec y(x.size());
  if (s.norm == Spec::Layer) {
    double mean = 0, var = 0;
    for (double v : x) mean += v;
    mean /= x.size();
    for (double v : x) var += (v - mean) * (v - mean);
    var /= x.size();
    for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + s.eps) * g[i] + (*b)[i];
    return y;
  }
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + s.eps);
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * (s.norm == Spec::RmsPlusOne ? 1.0 + g[i] : g[i]);
  return y;
}

double act(const Spec& s, double a) {
  if (s.act == Spec::Silu) return a / (1 + std::exp(-a));
  if (s.act == Spec::Relu) return std::max(a, 0.0);
  return 0.5 * a * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (a + 0.044715 * a * a * a)));
}

// inv_freq of modeling_rope_utils: default, linear (÷ factor) and llama3 (wavelength bands).
Vec inv_freq(const Spec& s) {
  Vec f(static_cast<size_t>(s.head_dim / 2));
  for (int i = 0; i < s.head_dim / 2; ++i) {
    double v = 1.0 / std::pow(s.theta, 2.0 * i / s.head_dim);
    if (s.scaling == "linear") v /= s.factor;
    if (s.scaling == "llama3") {
      const double wavelen = 2 * M_PI / v, low_wl = s.original / s.low, high_wl = s.original / s.high;
      if (wavelen > low_wl) {
        v /= s.factor;
      } else if (!(wavelen < high_wl)) {
        const double smooth = (s.original / wavelen - s.low) / (s.high - s.low);
        v = (1 - smooth) * v / s.factor + smooth * v;
      }
    }
    f[static_cast<size_t>(i)] = v;
  }
  return f;
}

// rotate_half: (x1, x2) -> (x1 cos − x2 sin, x2 cos + x1 sin) with x1, x2 the two halves.
void rotate(double* v, int hd, int pos, const Vec& freq) {
  for (int i = 0; i < hd / 2; ++i) {
    const double a = pos * freq[static_cast<size_t>(i)], x0 = v[i], x1 = v[i + hd / 2];
    v[i] = x0 * std::cos(a) - x1 * std::sin(a);
    v[i + hd / 2] = x1 * std::cos(a) + x0 * std::sin(a);
  }
}

std::vector<Vec> reference_logits(const Spec& s, const Weights& w, const std::vector<int>& tokens) {
  const int T = static_cast<int>(tokens.size()), d = s.dim, hd = s.head_dim, h = s.hidden;
  const int q_dim = s.heads * hd, kv_dim = s.kv_heads * hd;
  const bool opt = s.family == "opt";
  const std::string root = opt ? "model.decoder." : "model.";
  const std::string layers = root + "layers.";
  auto W = [&](const std::string& n) -> const Vec& { return w.at(n); };
  const Vec freq = inv_freq(s);
  std::vector<Vec> x(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) {
    Vec e(static_cast<size_t>(s.embed_dim));
    for (int i = 0; i < s.embed_dim; ++i) e[i] = W(root + "embed_tokens.weight")[static_cast<size_t>(tokens[t] * s.embed_dim + i)] * s.embed_scale;
    x[t] = s.embed_dim != d ? matvec(W(root + "project_in.weight"), d, s.embed_dim, e) : e;
    if (opt)
      for (int i = 0; i < d; ++i) x[t][i] += W(root + "embed_positions.weight")[static_cast<size_t>((t + 2) * d + i)];
  }
  for (int l = 0; l < s.layers; ++l) {
    auto P = [&](const std::string& rest) -> const Vec& { return W(L(l, rest, layers)); };
    const std::string attn_norm = opt ? "self_attn_layer_norm" : "input_layernorm";
    const std::string mlp_norm = opt ? "final_layer_norm" : s.sandwich ? "pre_feedforward_layernorm" : "post_attention_layernorm";
    auto N = [&](const Vec& v, const std::string& n) {
      return norm(s, v, P(n + ".weight"), s.norm == Spec::Layer ? &P(n + ".bias") : nullptr);
    };
    std::vector<Vec> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      const Vec xn = s.post_ln ? x[t] : N(x[t], attn_norm);
      if (s.fused_qkv) {
        const Vec& m = P("self_attn.qkv_proj.weight");
        q[t] = matvec(m, q_dim, d, xn, 0);
        k[t] = matvec(m, kv_dim, d, xn, q_dim);
        v[t] = matvec(m, kv_dim, d, xn, q_dim + kv_dim);
      } else {
        q[t] = matvec(P("self_attn.q_proj.weight"), q_dim, d, xn);
        k[t] = matvec(P("self_attn.k_proj.weight"), kv_dim, d, xn);
        v[t] = matvec(P("self_attn.v_proj.weight"), kv_dim, d, xn);
        if (s.qkv_bias) {
          add_to(q[t], P("self_attn.q_proj.bias"));
          add_to(k[t], P("self_attn.k_proj.bias"));
          add_to(v[t], P("self_attn.v_proj.bias"));
        }
      }
      if (s.rotary) {
        for (int hh = 0; hh < s.heads; ++hh) rotate(&q[t][hh * hd], hd, t, freq);
        for (int hh = 0; hh < s.kv_heads; ++hh) rotate(&k[t][hh * hd], hd, t, freq);
      }
    }
    const int window = s.window.empty() ? 0 : s.window[static_cast<size_t>(l)];
    const double scale = s.attn_scale > 0 ? s.attn_scale : 1.0 / std::sqrt(static_cast<double>(hd));
    std::vector<Vec> attn_out(T);
    for (int t = 0; t < T; ++t) {
      Vec att(static_cast<size_t>(q_dim), 0.0);
      for (int hh = 0; hh < s.heads; ++hh) {
        const int kh = hh / (s.heads / s.kv_heads);
        // Keys j with j ≤ t and, with a window, t − j < window (masking_utils' sliding_window_overlay).
        const int first = window > 0 ? std::max(0, t - window + 1) : 0;
        Vec sc(static_cast<size_t>(t + 1), -1e300);
        double mx = -1e300;
        for (int j = first; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += q[t][hh * hd + i] * k[j][kh * hd + i];
          dot *= scale;
          if (s.attn_cap > 0) dot = std::tanh(dot / s.attn_cap) * s.attn_cap;
          sc[j] = dot;
          mx = std::max(mx, dot);
        }
        double sum = 0;
        for (int j = first; j <= t; ++j) sum += (sc[j] = std::exp(sc[j] - mx));
        for (int j = first; j <= t; ++j)
          for (int i = 0; i < hd; ++i) att[hh * hd + i] += sc[j] / sum * v[j][kh * hd + i];
      }
      const std::string o_name = opt ? "self_attn.out_proj" : "self_attn.o_proj";
      Vec o = matvec(P(o_name + ".weight"), d, q_dim, att);
      if (s.o_bias) add_to(o, P(o_name + ".bias"));
      if (s.sandwich) o = N(o, "post_attention_layernorm");
      attn_out[t] = o;
    }
    for (int t = 0; t < T; ++t) {
      add_to(x[t], attn_out[t]);
      if (s.post_ln) x[t] = N(x[t], attn_norm);
      const Vec xn = s.post_ln ? x[t] : N(x[t], mlp_norm);
      Vec a;
      if (!s.gated) {
        a = matvec(P("fc1.weight"), h, d, xn);
        add_to(a, P("fc1.bias"));
        for (double& e : a) e = act(s, e);
      } else {
        Vec g, u;
        if (s.fused_gate_up) {  // chunk(2): gate first, then up
          g = matvec(P("mlp.gate_up_proj.weight"), h, d, xn, 0);
          u = matvec(P("mlp.gate_up_proj.weight"), h, d, xn, h);
        } else {
          g = matvec(P("mlp.gate_proj.weight"), h, d, xn);
          u = matvec(P("mlp.up_proj.weight"), h, d, xn);
          if (s.mlp_bias) add_to(g, P("mlp.gate_proj.bias")), add_to(u, P("mlp.up_proj.bias"));
        }
        a.resize(static_cast<size_t>(h));
        for (int i = 0; i < h; ++i) a[i] = act(s, g[i]) * u[i];
      }
      Vec m = matvec(P(opt ? "fc2.weight" : "mlp.down_proj.weight"), d, h, a);
      if (opt) add_to(m, P("fc2.bias"));
      if (s.mlp_bias && !opt) add_to(m, P("mlp.down_proj.bias"));
      if (s.sandwich) m = N(m, "post_feedforward_layernorm");
      add_to(x[t], m);
      if (s.post_ln) x[t] = N(x[t], mlp_norm);
    }
  }
  std::vector<Vec> logits(T);
  const Vec& head = s.tied ? W(root + "embed_tokens.weight") : W("lm_head.weight");
  for (int t = 0; t < T; ++t) {
    Vec xn = x[t];
    if (s.final_norm)
      xn = opt ? norm(s, xn, W(root + "final_layer_norm.weight"), &W(root + "final_layer_norm.bias"))
               : norm(s, xn, W("model.norm.weight"), nullptr);
    if (s.embed_dim != d) xn = matvec(W(root + "project_out.weight"), s.embed_dim, d, xn);
    logits[t] = matvec(head, s.vocab, s.embed_dim, xn);
    if (s.final_cap > 0)
      for (double& z : logits[t]) z = std::tanh(z / s.final_cap) * s.final_cap;
  }
  return logits;
}

// ---- the families, as the hub ships them ----

json common_llama_keys(const Spec& s, const char* arch, const char* type) {
  return {{"architectures", {arch}}, {"model_type", type},          {"hidden_size", s.dim},
          {"intermediate_size", s.hidden}, {"num_hidden_layers", s.layers}, {"num_attention_heads", s.heads},
          {"num_key_value_heads", s.kv_heads}, {"vocab_size", s.vocab},   {"max_position_embeddings", s.context},
          {"rms_norm_eps", s.eps},          {"rope_theta", s.theta},       {"initializer_range", 0.02},
          {"torch_dtype", "bfloat16"},      {"transformers_version", "4.46.0"}, {"use_cache", true},
          {"attention_dropout", 0.0}};
}

Spec llama3() {  // Llama 3.2 1B's keys: explicit head_dim, llama3 rope scaling, tied, list-valued eos
  Spec s;
  s.family = "llama3";
  s.head_dim = 12;  // q is 48 wide, hidden 32
  s.theta = 100;
  s.scaling = "llama3", s.factor = 8, s.low = 1, s.high = 4, s.original = 16;
  s.tied = true;
  s.config = common_llama_keys(s, "LlamaForCausalLM", "llama");
  s.config.update({{"head_dim", s.head_dim}, {"attention_bias", false}, {"mlp_bias", false}, {"hidden_act", "silu"},
                   {"pretraining_tp", 1}, {"tie_word_embeddings", true}, {"bos_token_id", 1}, {"eos_token_id", {5, 6, 7}},
                   {"rope_scaling", {{"factor", 8.0}, {"high_freq_factor", 4.0}, {"low_freq_factor", 1.0},
                                     {"original_max_position_embeddings", 16}, {"rope_type", "llama3"}}}});
  return s;
}

Spec llama_biases() {  // attention_bias / mlp_bias honoured, linear rope scaling (older "type" key)
  Spec s;
  s.family = "llama";
  s.qkv_bias = s.o_bias = s.mlp_bias = true;
  s.scaling = "linear", s.factor = 4;
  s.config = common_llama_keys(s, "LlamaForCausalLM", "llama");
  s.config.update({{"attention_bias", true}, {"mlp_bias", true}, {"hidden_act", "silu"}, {"tie_word_embeddings", false},
                   {"bos_token_id", 1}, {"eos_token_id", 2}, {"rope_scaling", {{"type", "linear"}, {"factor", 4.0}}}});
  return s;
}

Spec mistral() {
  Spec s;
  s.family = "mistral";
  s.window = {4, 4};
  s.config = common_llama_keys(s, "MistralForCausalLM", "mistral");
  s.config.update({{"hidden_act", "silu"}, {"sliding_window", 4}, {"tie_word_embeddings", false}, {"bos_token_id", 1},
                   {"eos_token_id", 2}});
  return s;
}

Spec qwen2(bool windows = true) {  // Qwen2.5: q/k/v biases, tied, sliding window from max_window_layers on
  Spec s;
  s.family = "qwen2";
  s.qkv_bias = true;
  s.tied = true;
  s.eps = 1e-6;
  if (windows) s.window = {0, 5};
  s.config = common_llama_keys(s, "Qwen2ForCausalLM", "qwen2");
  s.config.update({{"hidden_act", "silu"}, {"tie_word_embeddings", true}, {"use_sliding_window", windows},
                   {"sliding_window", 5}, {"max_window_layers", 1}, {"bos_token_id", 1}, {"eos_token_id", 2},
                   {"rope_scaling", nullptr}});
  return s;
}

Spec gemma() {  // head_dim independent of hidden/heads, RMSNorm (1 + w), GeGLU, embeddings × √hidden
  Spec s;
  s.family = "gemma";
  s.head_dim = 16;
  s.norm = Spec::RmsPlusOne;
  s.eps = 1e-6;
  s.act = Spec::GeluTanh;
  s.tied = true;
  s.embed_scale = std::sqrt(32.0);
  s.config = common_llama_keys(s, "GemmaForCausalLM", "gemma");
  s.config.update({{"head_dim", 16}, {"hidden_act", "gelu"}, {"hidden_activation", "gelu_pytorch_tanh"},
                   {"attention_bias", false}, {"pad_token_id", 0}, {"bos_token_id", 2}, {"eos_token_id", 1},
                   {"rope_scaling", nullptr}});
  return s;
}

// Pre/post norms, attention and final soft-caps, alternating sliding window. llama.cpp scales queries
// by 1/√head_dim (query_pre_attn_scalar has no GGUF key), so the GGUF case uses that value.
Spec gemma2(int query_pre_attn_scalar = 24) {
  Spec s = gemma();
  s.family = "gemma2";
  s.sandwich = true;
  s.attn_cap = 1.5, s.final_cap = 3.0;
  s.attn_scale = 1.0 / std::sqrt(static_cast<double>(query_pre_attn_scalar));
  s.window = {3, 0};
  s.config = common_llama_keys(s, "Gemma2ForCausalLM", "gemma2");
  s.config.update({{"head_dim", 16}, {"hidden_act", "gelu_pytorch_tanh"}, {"hidden_activation", "gelu_pytorch_tanh"},
                   {"attention_bias", false}, {"attn_logit_softcapping", 1.5}, {"final_logit_softcapping", 3.0},
                   {"query_pre_attn_scalar", query_pre_attn_scalar}, {"sliding_window", 3}, {"cache_implementation", "hybrid"},
                   {"pad_token_id", 0}, {"bos_token_id", 2}, {"eos_token_id", 1}});
  return s;
}

Spec phi3() {  // fused qkv_proj and gate_up_proj, sliding window
  Spec s;
  s.family = "phi3";
  s.heads = s.kv_heads = 4;
  s.fused_qkv = s.fused_gate_up = true;
  s.window = {6, 6};
  s.config = common_llama_keys(s, "Phi3ForCausalLM", "phi3");
  s.config.update({{"hidden_act", "silu"}, {"sliding_window", 6}, {"original_max_position_embeddings", 64},
                   {"rope_scaling", nullptr}, {"embd_pdrop", 0.0}, {"resid_pdrop", 0.0}, {"tie_word_embeddings", false},
                   {"auto_map", {{"AutoConfig", "configuration_phi3.Phi3Config"}}}, {"pad_token_id", 0},
                   {"bos_token_id", 1}, {"eos_token_id", 2}, {"attention_bias", false}});
  return s;
}

Spec opt350m() {  // word_embed_proj_dim ≠ hidden (project_in/out), post-LN, no final norm
  Spec s;
  s.family = "opt";
  s.heads = s.kv_heads = 4;
  s.embed_dim = 24;
  s.norm = Spec::Layer;
  s.act = Spec::Relu;
  s.gated = s.rotary = s.final_norm = false;
  s.post_ln = true;
  s.qkv_bias = s.o_bias = s.mlp_bias = true;
  s.tied = true;
  s.config = {{"_name_or_path", "facebook/opt-350m"}, {"activation_dropout", 0.0}, {"activation_function", "relu"},
              {"architectures", {"OPTForCausalLM"}}, {"attention_dropout", 0.0}, {"bos_token_id", 2},
              {"do_layer_norm_before", false}, {"dropout", 0.1}, {"eos_token_id", 2}, {"ffn_dim", s.hidden},
              {"hidden_size", s.dim}, {"init_std", 0.02}, {"layerdrop", 0.0}, {"max_position_embeddings", s.context},
              {"model_type", "opt"}, {"num_attention_heads", s.heads}, {"num_hidden_layers", s.layers},
              {"pad_token_id", 1}, {"prefix", "</s>"}, {"torch_dtype", "float16"}, {"transformers_version", "4.21.0"},
              {"use_cache", true}, {"vocab_size", s.vocab}, {"word_embed_proj_dim", s.embed_dim}};
  return s;
}

std::vector<Spec> all_families() { return {llama3(), llama_biases(), mistral(), qwen2(), gemma(), gemma2(), phi3(), opt350m()}; }

void write_folder(const Spec& s, const Weights& w, const Shapes& shapes, const fs::path& dir, const std::string& dtype) {
  fs::create_directories(dir);
  write_bytes((dir / "config.json").string(), s.config.dump(2));
  write_weights_safetensors((dir / "model.safetensors").string(), w, shapes, dtype);
  // A tokenizer of exactly the model's vocabulary, so ppl, quantize and generate run from the folder.
  std::vector<std::pair<std::string, float>> extra = {{" ", 0.0f}};
  for (int i = 260; i < s.vocab; ++i) extra.emplace_back(std::string(1, static_cast<char>('A' + (i - 260) % 26)) + std::to_string(i), 0.0f);
  write_llama2c_tokenizer((dir / "tokenizer.bin").string(), extra);
}

// The tokens of two windows (different lengths of history) and a KV-cached walk.
std::vector<int> test_tokens(const Spec& s, int n, int salt) {
  std::vector<int> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[i] = (i * 17 + 5 + salt * 31) % s.vocab;
  return t;
}

double max_abs(const std::vector<Vec>& a) {
  double m = 0;
  for (const auto& r : a)
    for (double v : r) m = std::max(m, std::abs(v));
  return m;
}

double max_diff(const std::vector<Vec>& a, const std::vector<Vec>& b) {
  double m = 0;
  for (size_t t = 0; t < a.size(); ++t)
    for (size_t i = 0; i < a[t].size(); ++i) m = std::max(m, std::abs(a[t][i] - b[t][i]));
  return m;
}

std::vector<Vec> baq_logits(const Model& m, const std::vector<int>& tokens) {
  const ModelConfig& c = m.config();
  const int T = static_cast<int>(tokens.size());
  std::vector<float> hidden(static_cast<size_t>(T) * c.dim), logits(static_cast<size_t>(T) * c.vocab_size);
  m.forward(tokens, BatchShape{1, T}, hidden.data());
  m.logits(hidden.data(), T, logits.data());
  std::vector<Vec> out(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) out[t].assign(logits.begin() + t * c.vocab_size, logits.begin() + (t + 1) * c.vocab_size);
  return out;
}

void expect_model_matches_reference(const Spec& s, const Model& m, const Weights& w, const std::string& what) {
  const int T = 11;
  const std::vector<int> a = test_tokens(s, T, 0), b = test_tokens(s, T, 1);
  // Two windows in one batch, each against its own reference.
  std::vector<int> both = a;
  both.insert(both.end(), b.begin(), b.end());
  const ModelConfig& c = m.config();
  std::vector<float> hidden(static_cast<size_t>(2 * T) * c.dim), logits(static_cast<size_t>(2 * T) * c.vocab_size);
  m.forward(both, BatchShape{2, T}, hidden.data());
  m.logits(hidden.data(), 2 * T, logits.data());
  for (int win = 0; win < 2; ++win) {
    const auto ref = reference_logits(s, w, win == 0 ? a : b);
    std::vector<Vec> got(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t)
      got[t].assign(logits.begin() + (win * T + t) * c.vocab_size, logits.begin() + (win * T + t + 1) * c.vocab_size);
    EXPECT_GT(max_abs(ref), 0.5) << what;
    EXPECT_LE(max_diff(ref, got), 2e-4 * max_abs(ref)) << what << " window " << win;
  }
  // The first window again through the KV cache in uneven steps (positions, windows continue).
  const auto ref = reference_logits(s, w, a);
  KvCache cache;
  int at = 0;
  for (int step : {4, 1, 1, 2, 3}) {
    std::vector<float> h(static_cast<size_t>(step) * c.dim), l(static_cast<size_t>(step) * c.vocab_size);
    m.forward(std::span<const int>(a).subspan(static_cast<size_t>(at), static_cast<size_t>(step)), BatchShape{1, step},
              h.data(), nullptr, &cache);
    m.logits(h.data(), step, l.data());
    double diff = 0;
    for (int t = 0; t < step; ++t)
      for (int v = 0; v < c.vocab_size; ++v) diff = std::max(diff, std::abs(ref[at + t][v] - l[t * c.vocab_size + v]));
    EXPECT_LE(diff, 2e-4 * max_abs(ref)) << what << " cached step at " << at;
    at += step;
  }
  // Token by token through the generation path (one parallel region per token, worksharing loops).
  KvCache gen;
  std::vector<float> l(static_cast<size_t>(c.vocab_size));
  for (int t = 0; t < T; ++t) {
    m.next_logits(a[static_cast<size_t>(t)], gen, l.data());
    double diff = 0;
    for (int v = 0; v < c.vocab_size; ++v) diff = std::max(diff, std::abs(ref[t][v] - l[v]));
    EXPECT_LE(diff, 2e-4 * max_abs(ref)) << what << " generated token " << t;
  }
  EXPECT_EQ(gen.length, T);
}

TEST(Families, EveryFamilyMatchesItsReferenceInEveryDtype) {
  for (const Spec& s : all_families()) {
    Weights w;
    Shapes shapes;
    weights_for(s, 7, w, shapes);
    for (const char* dtype : {"F32", "BF16", "F16"}) {
      TempDir dir;
      write_folder(s, w, shapes, dir.path(), dtype);
      const LoadedModel m = load_model(dir.path().string(), "", false);
      EXPECT_EQ(m.config.family->name, s.family == "llama3" ? "llama" : s.family);
      expect_model_matches_reference(s, *m.model, w, s.family + " " + dtype);
    }
  }
}

// Each feature the reference implements changes the logits when switched off: the comparison above
// would catch a baq that ignored it.
TEST(Families, EveryFeatureMatters) {
  const std::vector<std::pair<Spec, std::function<void(Spec&)>>> variants = {
      {llama3(), [](Spec& s) { s.scaling.clear(); }},
      {llama_biases(), [](Spec& s) { s.scaling.clear(); }},
      {llama_biases(), [](Spec& s) { s.qkv_bias = s.o_bias = s.mlp_bias = false; }},
      {mistral(), [](Spec& s) { s.window.clear(); }},
      {qwen2(), [](Spec& s) { s.window.clear(); }},
      {qwen2(), [](Spec& s) { s.qkv_bias = false; }},
      {gemma(), [](Spec& s) { s.norm = Spec::Rms; }},
      {gemma(), [](Spec& s) { s.embed_scale = 1; }},
      {gemma(), [](Spec& s) { s.act = Spec::Silu; }},
      {gemma2(), [](Spec& s) { s.attn_cap = 0; }},
      {gemma2(), [](Spec& s) { s.final_cap = 0; }},
      {gemma2(), [](Spec& s) { s.window.clear(); }},
      {gemma2(), [](Spec& s) { s.attn_scale = 0; }},
      {phi3(), [](Spec& s) { s.window.clear(); }},
      {opt350m(), [](Spec& s) { s.post_ln = false; }},
  };
  for (const auto& [spec, off] : variants) {
    Weights w;
    Shapes shapes;
    weights_for(spec, 7, w, shapes);
    Spec other = spec;
    off(other);  // the same stored weights read with one feature missing
    const auto tokens = test_tokens(spec, 11, 0);
    const auto a = reference_logits(spec, w, tokens), b = reference_logits(other, w, tokens);
    EXPECT_GT(max_diff(a, b), 1e-2 * max_abs(a)) << spec.family;
  }
}

// llama.cpp's GGUF of the same checkpoint (its converter's names, q/k permutation for "llama",
// Gemma's norms stored as 1 + w, llama3 scaling as rope_freqs factors) gives the same logits.
void write_gguf(const Spec& s, const Weights& w, const Shapes& shapes, const std::string& arch, const std::string& path,
                bool f16) {
  GgufWriter g;
  g.str("general.architecture", arch);
  const std::string a = arch + ".";
  g.u32(a + "context_length", static_cast<uint32_t>(s.context));
  g.u32(a + "embedding_length", static_cast<uint32_t>(s.dim));
  g.u32(a + "block_count", static_cast<uint32_t>(s.layers));
  g.u32(a + "feed_forward_length", static_cast<uint32_t>(s.hidden));
  g.u32(a + "attention.head_count", static_cast<uint32_t>(s.heads));
  g.u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.kv_heads));
  g.u32(a + "attention.key_length", static_cast<uint32_t>(s.head_dim));
  g.u32(a + "attention.value_length", static_cast<uint32_t>(s.head_dim));
  g.u32(a + "rope.dimension_count", static_cast<uint32_t>(s.head_dim));
  g.f32(a + "attention.layer_norm_rms_epsilon", static_cast<float>(s.eps));
  g.f32(a + "rope.freq_base", static_cast<float>(s.theta));
  if (s.attn_cap > 0) g.f32(a + "attn_logit_softcapping", static_cast<float>(s.attn_cap));
  if (s.final_cap > 0) g.f32(a + "final_logit_softcapping", static_cast<float>(s.final_cap));
  int window = 0;
  for (int v : s.window) window = std::max(window, v);
  if (window > 0) g.u32(a + "attention.sliding_window", static_cast<uint32_t>(window));
  g.str("tokenizer.ggml.model", "llama");
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  for (int i = 3; i < s.vocab; ++i) tokens.push_back(i < 259 ? fmt::format("<0x{:02X}>", i - 3) : fmt::format("t{}", i));
  g.strings("tokenizer.ggml.tokens", tokens);
  g.floats("tokenizer.ggml.scores", std::vector<float>(tokens.size(), 0.0f));
  g.u32("tokenizer.ggml.bos_token_id", 1);
  g.u32("tokenizer.ggml.eos_token_id", 2);
  // Weights, renamed, permuted and offset as llama.cpp's converter does.
  const bool permute = arch == "llama", plus_one = s.norm == Spec::RmsPlusOne;
  auto permuted = [&](const Vec& m, int heads, int rows_per_head, int cols) {
    Vec out(m.size());
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < rows_per_head / 2; ++i)
        for (int c = 0; c < cols; ++c) {
          out[static_cast<size_t>((h * rows_per_head + 2 * i) * cols + c)] = m[static_cast<size_t>((h * rows_per_head + i) * cols + c)];
          out[static_cast<size_t>((h * rows_per_head + 2 * i + 1) * cols + c)] =
              m[static_cast<size_t>((h * rows_per_head + i + rows_per_head / 2) * cols + c)];
        }
    return out;
  };
  const std::map<std::string, std::string> names = {
      {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", s.sandwich ? "post_attention_norm" : "ffn_norm"},
      {"pre_feedforward_layernorm", "ffn_norm"}, {"post_feedforward_layernorm", "post_ffw_norm"},
      {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"}, {"self_attn.qkv_proj", "attn_qkv"}, {"mlp.gate_proj", "ffn_gate"},
      {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}, {"mlp.gate_up_proj", "ffn_up"}};
  for (const auto& [name, values] : w) {
    std::string gname;
    Vec v = values;
    const std::vector<int64_t>& shape = shapes.at(name);
    if (name == "model.embed_tokens.weight") gname = "token_embd.weight";
    else if (name == "model.norm.weight") gname = "output_norm.weight";
    else if (name == "lm_head.weight") gname = "output.weight";
    else {
      const size_t p = name.find('.', 13);  // after "model.layers.N"
      const std::string layer = name.substr(13, p - 13), rest = name.substr(p + 1);
      const size_t dot = rest.rfind('.');
      const std::string module = rest.substr(0, dot), kind = rest.substr(dot + 1);
      gname = "blk." + layer + "." + names.at(module) + "." + kind;
      if (permute && kind == "weight" && module == "self_attn.q_proj") v = permuted(v, s.heads, s.head_dim, s.dim);
      if (permute && kind == "weight" && module == "self_attn.k_proj") v = permuted(v, s.kv_heads, s.head_dim, s.dim);
      if (permute && kind == "bias" && module == "self_attn.q_proj") v = permuted(v, s.heads, s.head_dim, 1);
      if (permute && kind == "bias" && module == "self_attn.k_proj") v = permuted(v, s.kv_heads, s.head_dim, 1);
    }
    if (plus_one && gname.find("norm.weight") != std::string::npos)
      for (double& x : v) x = static_cast<double>(static_cast<float>(x + 1.0));
    g.tensor(gname, shape, v, f16 && shape.size() == 2);
  }
  if (s.scaling == "llama3") {  // llama.cpp: the divisor of each frequency
    std::vector<double> factors;
    for (int i = 0; i < s.head_dim / 2; ++i) {
      const double freq = 1.0 / std::pow(s.theta, 2.0 * i / s.head_dim), wavelen = 2 * M_PI / freq;
      if (wavelen < s.original / s.high) factors.push_back(1);
      else if (wavelen > s.original / s.low) factors.push_back(s.factor);
      else {
        const double smooth = (s.original / wavelen - s.low) / (s.high - s.low);
        factors.push_back(1 / ((1 - smooth) / s.factor + smooth));
      }
    }
    g.tensor("rope_freqs.weight", {static_cast<int64_t>(factors.size())}, factors);
  }
  g.write(path);
}

TEST(Families, GgufFormGivesTheSameLogits) {
  const std::vector<std::pair<Spec, std::string>> cases = {
      {llama3(), "llama"}, {qwen2(false), "qwen2"}, {gemma(), "gemma"}, {gemma2(16), "gemma2"}, {phi3(), "phi3"}};
  for (const auto& [s, arch] : cases) {
    Weights w;
    Shapes shapes;
    weights_for(s, 11, w, shapes);
    TempDir dir;
    write_folder(s, w, shapes, dir.path() / "hf", "F32");
    write_gguf(s, w, shapes, arch, dir.file("m.gguf"), false);
    const LoadedModel hf = load_model((dir.path() / "hf").string(), "", false);
    const LoadedModel gg = load_model(dir.file("m.gguf"), "", false);
    EXPECT_EQ(gg.config.family->name, hf.config.family->name) << arch;
    const auto tokens = test_tokens(s, 13, 2);
    const auto a = baq_logits(*hf.model, tokens), b = baq_logits(*gg.model, tokens);
    EXPECT_LE(max_diff(a, b), 1e-5 * max_abs(a)) << arch;
    // And against the reference directly (the GGUF path has its own layout conventions).
    EXPECT_LE(max_diff(reference_logits(s, w, tokens), b), 2e-4 * max_abs(a)) << arch;
  }
}

// What a CLI run needs: the family's BF16 folder (seeded weights) at dir/hf and a short calibration
// and evaluation text at dir/text.txt.
void write_cli_inputs(const Spec& s, uint32_t seed, const TempDir& dir) {
  Weights w;
  Shapes shapes;
  weights_for(s, seed, w, shapes);
  write_folder(s, w, shapes, dir.path() / "hf", "BF16");
  std::string text;
  for (int i = 0; i < 30; ++i) text += "ABCDEF GHIJ KLMNOP QRSTU VWXYZ " + std::to_string(i) + "\n";
  write_bytes(dir.file("text.txt"), text);
}

// Quantized with every method into a .baq that reads back to the same model, and run by ppl and
// generate through the CLI.
TEST(Families, QuantizeEveryMethodToBaqAndRunIt) {
  for (const Spec& s : all_families()) {
    TempDir dir;
    write_cli_inputs(s, 3, dir);
    for (const char* method : {"rtn", "gptq", "baq"}) {
      const std::string out = dir.file(std::string(method) + ".baq");
      const auto q = run_command(std::string(BAQ_BINARY) + " quantize " + (dir.path() / "hf").string() + " --method " +
                                 method + " --bits 3 --calib " + dir.file("text.txt") + " --nsamples 4 --seqlen 16 --out " + out);
      ASSERT_EQ(q.status, 0) << s.family << " " << method << "\n" << q.output;
      const LoadedModel m = load_model(out, "");
      EXPECT_EQ(m.config.family->name, s.family == "llama3" ? "llama" : s.family);
      EXPECT_EQ(m.config.window, s.window.empty() ? std::vector<int>{} : s.window);
      const auto p = run_command(std::string(BAQ_BINARY) + " ppl " + out + " --text " + dir.file("text.txt") + " --seqlen 16");
      EXPECT_EQ(p.status, 0) << s.family << " " << method << "\n" << p.output;
      EXPECT_NE(p.output.find("\nppl "), std::string::npos) << p.output;
    }
    const auto g = run_command(std::string(BAQ_BINARY) + " generate " + dir.file("gptq.baq") + " --prompt ABC -n 8 --temp 0");
    EXPECT_EQ(g.status, 0) << s.family << "\n" << g.output;
    EXPECT_NE(g.output.find("generated"), std::string::npos) << g.output;
  }
}

// `baq info` names the family and every config field that shaped the math; a field it cannot
// honour is the one-line reason it stops.
TEST(Families, InfoListsTheFieldsThatShapeTheMath) {
  TempDir dir;
  const Spec g2 = gemma2();
  Weights w;
  Shapes shapes;
  weights_for(g2, 1, w, shapes);
  write_folder(g2, w, shapes, dir.path() / "gemma2", "BF16");
  auto r = run_command(std::string(BAQ_BINARY) + " info " + (dir.path() / "gemma2").string());
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* want : {"gemma2", "RMSNorm (1 + w)", "also on each sub-block's output", "GELU (tanh)", "score soft-cap 1.5",
                           "(3 keys)", "logit soft-cap 3"})
    EXPECT_NE(r.output.find(want), std::string::npos) << want << "\n" << r.output;
  const Spec l3 = llama3();
  weights_for(l3, 1, w, shapes);
  write_folder(l3, w, shapes, dir.path() / "llama3", "F32");
  r = run_command(std::string(BAQ_BINARY) + " info " + (dir.path() / "llama3").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("scaling llama3 factor 8"), std::string::npos) << r.output;
  const Spec qw = qwen2();
  weights_for(qw, 1, w, shapes);
  write_folder(qw, w, shapes, dir.path() / "qwen2", "F32");
  r = run_command(std::string(BAQ_BINARY) + " info " + (dir.path() / "qwen2").string());
  EXPECT_NE(r.output.find("biases q/k/v"), std::string::npos) << r.output;
  json c = qw.config;
  c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  write_bytes((dir.path() / "qwen2" / "config.json").string(), c.dump());
  r = run_command(std::string(BAQ_BINARY) + " info " + (dir.path() / "qwen2").string());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("rope type 'yarn' is not supported"), std::string::npos) << r.output;
}

// The whole model through the CLI at stored budgets: every block linear within --bpw as stored, the
// head and the untied embedding packed within theirs, the file runs; a budget that cannot be met is
// one line naming its flag.
TEST(Families, WholeModelAtStoredBudgetsThroughTheCli) {
  const Spec s = mistral();  // untied head and embedding
  TempDir dir;
  write_cli_inputs(s, 5, dir);
  const std::string base = std::string(BAQ_BINARY) + " quantize " + (dir.path() / "hf").string() + " --calib " +
                           dir.file("text.txt") + " --nsamples 4 --seqlen 16";
  for (const char* method : {"gptq", "baq"}) {
    const std::string out = dir.file(std::string(method) + ".baq");
    const auto q = run_command(base + " --method " + method + " --bpw 3.5 --head-bpw 4.5 --embed-bpw 4 --out " + out);
    ASSERT_EQ(q.status, 0) << q.output;
    const json report = json::parse(read_bytes(dir.file(std::string(method) + ".report.json")));
    EXPECT_EQ(report["settings"]["stored_bits_per_weight"], 3.5);
    std::set<std::string> outer;
    for (const auto& l : report["layers"]) {
      const std::string name = l["name"];
      const double bpw = l["bits_per_weight"];
      if (name == "head" || name == "embeddings") {
        EXPECT_LE(bpw, name == "head" ? 4.5 : 4.0) << name;
        outer.insert(name);
      } else {
        EXPECT_LE(bpw, 3.5) << name;
      }
    }
    EXPECT_EQ(outer.size(), 2u);
    const LoadedModel m = load_model(out, "", false);
    EXPECT_NE(m.model->head().packed, nullptr);
    EXPECT_NE(m.model->packed_embeddings(), nullptr);
    const auto p = run_command(std::string(BAQ_BINARY) + " ppl " + out + " --text " + dir.file("text.txt") + " --seqlen 16");
    EXPECT_EQ(p.status, 0) << p.output;
  }
  const auto bad = run_command(base + " --head-bpw 2.5 --out " + dir.file("bad.baq"));
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("--head-bpw"), std::string::npos) << bad.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad.baq")));
}

TEST(Families, ConfigFieldsThatChangeTheMathAreNeverIgnored) {
  TempDir dir;
  Spec s = llama3();
  Weights w;
  Shapes shapes;
  weights_for(s, 1, w, shapes);
  write_folder(s, w, shapes, dir.path(), "F32");
  auto with = [&](const std::function<void(json&)>& edit) {
    json c = s.config;
    edit(c);
    write_bytes(dir.file("config.json"), c.dump());
    return [&] { load_model(dir.path().string(), "", false); };
  };
  expect_error(with([](json& c) { c["attn_logit_softcapping"] = 30.0; }), {"config.json", "'attn_logit_softcapping'", "not known"});
  expect_error(with([](json& c) { c["use_qk_norm"] = true; }), {"'use_qk_norm'"});
  expect_error(with([](json& c) { c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; }), {"rope type 'yarn' is not supported"});
  expect_error(with([](json& c) { c["partial_rotary_factor"] = 0.5; }), {"partial_rotary_factor"});
  expect_error(with([](json& c) { c["hidden_act"] = "gelu"; }), {"hidden_act"});
  expect_error(with([](json& c) { c["quantization_config"] = {{"quant_method", "gptq"}}; }), {"already quantized"});
  expect_error(with([](json& c) { c["num_hidden_layers"] = 1; }), {"config says 1 layers", "model.layers.1."});
  expect_error(with([](json& c) { c["hidden_size"] = (int64_t{1} << 33) + 256; }), {"'hidden_size'", "outside"});
  expect_error(with([](json& c) { c["hidden_size"] = "32"; }), {"'hidden_size'", "must be an integer"});
  expect_error(with([](json& c) { c["architectures"] = {"FalconForCausalLM"}; }), {"unknown architecture 'FalconForCausalLM'"});
}

}  // namespace
}  // namespace baq::test
