// The forward pass against an independent naive implementation (plain loops, double precision),
// on tiny random models the test writes itself as safetensors folders and llama2.c files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "baq/family.hpp"
#include "baq/model.hpp"
#include "model/kernels.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

using Vec = std::vector<double>;

Vec matvec(const Vec& w, int64_t rows, int64_t cols, const Vec& x) {
  Vec y(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[r] += w[r * cols + c] * x[c];
  return y;
}

Vec rms(const Vec& x, const Vec& g, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * g[i];
  return y;
}

Vec layer_norm(const Vec& x, const Vec& g, const Vec& b, double eps) {
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= x.size();
  for (double v : x) var += (v - mean) * (v - mean);
  var /= x.size();
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + eps) * g[i] + b[i];
  return y;
}

void add_to(Vec& x, const Vec& y) {
  for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
}

// Rotates one head vector by position `pos`, pairing (2i, 2i+1) or (i, i + hd/2).
void rotate(double* v, int hd, int pos, double theta, RopeStyle style) {
  for (int i = 0; i < hd / 2; ++i) {
    const double angle = pos * std::pow(theta, -2.0 * i / hd);
    const int a = style == RopeStyle::Interleaved ? 2 * i : i;
    const int b = style == RopeStyle::Interleaved ? 2 * i + 1 : i + hd / 2;
    const double x0 = v[a], x1 = v[b];
    v[a] = x0 * std::cos(angle) - x1 * std::sin(angle);
    v[b] = x0 * std::sin(angle) + x1 * std::cos(angle);
  }
}

// Logits (T × vocab) of one window, computed token by token in double.
std::vector<Vec> naive_logits(const ModelConfig& c, const Weights& w, const std::vector<int>& tokens) {
  const int T = static_cast<int>(tokens.size()), d = c.dim, hd = c.head_dim(), kvd = c.kv_dim(), h = c.hidden_dim;
  const bool llama = c.family->name != "opt";
  const std::string root = llama ? "model." : "model.decoder.";
  std::vector<Vec> x(T, Vec(d));
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < d; ++i) {
      x[t][i] = w.at(root + "embed_tokens.weight")[tokens[t] * d + i];
      if (!llama) x[t][i] += w.at(root + "embed_positions.weight")[(t + 2) * d + i];
    }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = root + "layers." + std::to_string(l) + ".";
    auto W = [&](const std::string& n) -> const Vec& { return w.at(p + n); };
    std::vector<Vec> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      const Vec xn = llama ? rms(x[t], W("input_layernorm.weight"), c.norm_eps)
                           : layer_norm(x[t], W("self_attn_layer_norm.weight"), W("self_attn_layer_norm.bias"), 1e-5);
      q[t] = matvec(W("self_attn.q_proj.weight"), d, d, xn);
      k[t] = matvec(W("self_attn.k_proj.weight"), kvd, d, xn);
      v[t] = matvec(W("self_attn.v_proj.weight"), kvd, d, xn);
      if (llama) {
        for (int hh = 0; hh < c.n_heads; ++hh) rotate(&q[t][hh * hd], hd, t, c.rope_theta, c.rope_style);
        for (int hh = 0; hh < c.n_kv_heads; ++hh) rotate(&k[t][hh * hd], hd, t, c.rope_theta, c.rope_style);
      } else {
        add_to(q[t], W("self_attn.q_proj.bias"));
        add_to(k[t], W("self_attn.k_proj.bias"));
        add_to(v[t], W("self_attn.v_proj.bias"));
      }
    }
    for (int t = 0; t < T; ++t) {
      Vec att(d, 0.0);
      for (int hh = 0; hh < c.n_heads; ++hh) {
        const int kh = hh / (c.n_heads / c.n_kv_heads);
        Vec s(t + 1);
        double mx = -1e300;
        for (int j = 0; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += q[t][hh * hd + i] * k[j][kh * hd + i];
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i) att[hh * hd + i] += s[j] / sum * v[j][kh * hd + i];
      }
      add_to(x[t], matvec(W(llama ? "self_attn.o_proj.weight" : "self_attn.out_proj.weight"), d, d, att));
      if (!llama) add_to(x[t], W("self_attn.out_proj.bias"));
    }
    for (int t = 0; t < T; ++t) {
      if (llama) {
        const Vec xn = rms(x[t], W("post_attention_layernorm.weight"), c.norm_eps);
        const Vec g = matvec(W("mlp.gate_proj.weight"), h, d, xn), u = matvec(W("mlp.up_proj.weight"), h, d, xn);
        Vec a(h);
        for (int i = 0; i < h; ++i) a[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
        add_to(x[t], matvec(W("mlp.down_proj.weight"), d, h, a));
      } else {
        const Vec xn = layer_norm(x[t], W("final_layer_norm.weight"), W("final_layer_norm.bias"), 1e-5);
        Vec a = matvec(W("fc1.weight"), h, d, xn);
        add_to(a, W("fc1.bias"));
        for (double& e : a) e = std::max(e, 0.0);
        add_to(x[t], matvec(W("fc2.weight"), d, h, a));
        add_to(x[t], W("fc2.bias"));
      }
    }
  }
  std::vector<Vec> logits(T);
  const Vec& head = c.tied_embeddings ? w.at(root + "embed_tokens.weight") : w.at("lm_head.weight");
  for (int t = 0; t < T; ++t) {
    const Vec xn = llama ? rms(x[t], w.at("model.norm.weight"), c.norm_eps)
                         : layer_norm(x[t], w.at(root + "final_layer_norm.weight"), w.at(root + "final_layer_norm.bias"), 1e-5);
    logits[t] = matvec(head, c.vocab_size, d, xn);
  }
  return logits;
}

ModelConfig tiny_llama(RopeStyle style, bool tied) {
  // 72 is not a multiple of 32 (widths need not divide); 4 query heads share 2 KV heads.
  ModelConfig c = small_llama(32, 72, 2, 4, 2, 53, 16, tied);
  c.rope_style = style;
  return c;
}

ModelConfig tiny_opt() {
  ModelConfig c;
  c.family = &family_named("opt");
  c.norm = NormKind::Layer;
  c.gated_mlp = false;
  c.rotary = false;
  c.activation = Activation::Relu;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  c.dim = 24;
  c.hidden_dim = 40;
  c.n_layers = 2;
  c.n_heads = 3;
  c.n_kv_heads = 3;
  c.vocab_size = 41;
  c.max_seq_len = 16;
  c.head_size = 8;
  c.embed_dim = 24;
  c.tied_embeddings = true;
  return c;
}

// Two windows in one batch, each compared with its own naive forward: max |Δ| ≤ 1e-4 · max |logit|.
void expect_matches_naive(const LoadedModel& m, const ModelConfig& c, const Weights& w) {
  const int T = 11;
  std::vector<int> tokens(2 * T);
  for (int i = 0; i < 2 * T; ++i) tokens[i] = (i * 17 + 5) % c.vocab_size;
  std::vector<float> hidden(2 * T * c.dim), logits(2 * T * c.vocab_size);
  m.model->forward(tokens, BatchShape{2, T}, hidden.data());
  m.model->logits(hidden.data(), 2 * T, logits.data());
  for (int b = 0; b < 2; ++b) {
    const auto ref = naive_logits(c, w, std::vector<int>(tokens.begin() + b * T, tokens.begin() + (b + 1) * T));
    double max_ref = 0, max_diff = 0;
    for (int t = 0; t < T; ++t)
      for (int v = 0; v < c.vocab_size; ++v) {
        max_ref = std::max(max_ref, std::abs(ref[t][v]));
        max_diff = std::max(max_diff, std::abs(ref[t][v] - logits[(b * T + t) * c.vocab_size + v]));
      }
    EXPECT_GT(max_ref, 0.5);  // the logits are not degenerate
    EXPECT_LE(max_diff, 1e-4 * max_ref) << "window " << b;
  }

  // The same first window through a KV cache in uneven steps (4 tokens, 1, 1, 2, 3): every step's
  // logits match the naive forward at those positions (rotary/learned positions continue correctly).
  const auto ref = naive_logits(c, w, std::vector<int>(tokens.begin(), tokens.begin() + T));
  KvCache cache;
  int at = 0;
  for (int step : {4, 1, 1, 2, 3}) {
    std::vector<float> h(static_cast<size_t>(step * c.dim)), l(static_cast<size_t>(step * c.vocab_size));
    m.model->forward(std::span<const int>(tokens).subspan(static_cast<size_t>(at), static_cast<size_t>(step)),
                     BatchShape{1, step}, h.data(), nullptr, &cache);
    m.model->logits(h.data(), step, l.data());
    double max_ref = 0, max_diff = 0;
    for (int t = 0; t < step; ++t)
      for (int v = 0; v < c.vocab_size; ++v) {
        max_ref = std::max(max_ref, std::abs(ref[at + t][v]));
        max_diff = std::max(max_diff, std::abs(ref[at + t][v] - l[t * c.vocab_size + v]));
      }
    EXPECT_LE(max_diff, 1e-4 * max_ref) << "cached step at position " << at;
    at += step;
    EXPECT_EQ(cache.length, at);
  }
  // The cache cannot grow past the context.
  std::vector<int> more(static_cast<size_t>(c.max_seq_len - T + 1), 1);
  std::vector<float> h(more.size() * c.dim);
  expect_error([&] { m.model->forward(more, BatchShape{1, static_cast<int>(more.size())}, h.data(), nullptr, &cache); },
               {"exceed the model's context"});
}

// The attention kernel alone against plain loops in double, on windows longer than its runs of 128
// queries (a run scores only the keys its last query sees): whole windows (two in a batch), a
// continuation after 37 cached positions, a sliding window and a soft cap.
TEST(Forward, AttentionOverQueryRunsMatchesNaive) {
  struct Case {
    int batch, T, past, window;
    float softcap;
  };
  const int heads = 4, kv_heads = 2, hd = 8, qw = heads * hd, kw = kv_heads * hd;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (const Case& tc : {Case{2, 300, 0, 0, 0.0f}, Case{1, 257, 37, 0, 0.0f}, Case{1, 300, 0, 100, 20.0f}}) {
    const int S = tc.past + tc.T;
    std::vector<float> q(static_cast<size_t>(tc.batch) * tc.T * qw), k(static_cast<size_t>(tc.batch) * S * kw), v(k.size());
    for (auto* x : {&q, &k, &v})
      for (float& e : *x) e = normal(rng);
    const kernels::AttentionShape a{heads, kv_heads, hd, 1.0f / std::sqrt(static_cast<float>(hd)), tc.softcap, tc.window};
    std::vector<float> out(q.size());
    kernels::attention(q.data(), kernels::KeysValues{k.data(), v.data(), S}, BatchShape{tc.batch, tc.T, tc.past}, a, out.data());
    double max_ref = 0, max_diff = 0;
    for (int b = 0; b < tc.batch; ++b)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < tc.T; ++i) {
          const int kvh = h / (heads / kv_heads), last = tc.past + i;
          const int first = tc.window > 0 ? std::max(0, last - tc.window + 1) : 0;
          const float* qi = q.data() + (static_cast<size_t>(b) * tc.T + i) * qw + h * hd;
          Vec p;
          double top = -1e300;
          for (int j = first; j <= last; ++j) {
            const float* kj = k.data() + (static_cast<size_t>(b) * S + j) * kw + kvh * hd;
            double dot = 0;
            for (int d = 0; d < hd; ++d) dot += static_cast<double>(qi[d]) * kj[d];
            dot *= a.scale;
            if (tc.softcap > 0) dot = tc.softcap * std::tanh(dot / tc.softcap);
            p.push_back(dot);
            top = std::max(top, dot);
          }
          double total = 0;
          for (double& e : p) total += (e = std::exp(e - top));
          for (int d = 0; d < hd; ++d) {
            double ref = 0;
            for (int j = first; j <= last; ++j)
              ref += p[static_cast<size_t>(j - first)] / total * v[(static_cast<size_t>(b) * S + j) * kw + kvh * hd + d];
            max_ref = std::max(max_ref, std::abs(ref));
            max_diff = std::max(max_diff, std::abs(ref - out[(static_cast<size_t>(b) * tc.T + i) * qw + h * hd + d]));
          }
        }
    EXPECT_GT(max_ref, 0.5);
    EXPECT_LE(max_diff, 1e-5 * max_ref) << "T " << tc.T << ", past " << tc.past << ", window " << tc.window;
  }
}

TEST(Forward, LlamaSafetensorsRotateHalfMatchesNaive) {
  for (bool tied : {false, true}) {
    const ModelConfig c = tiny_llama(RopeStyle::RotateHalf, tied);
    TempDir dir;
    Weights w;
    const LoadedModel m = random_hf_model(c, 1, dir.path(), &w);
    EXPECT_EQ(m.config.rope_style, RopeStyle::RotateHalf);
    EXPECT_EQ(m.config.tied_embeddings, tied);
    expect_matches_naive(m, c, w);
  }
}

TEST(Forward, Llama2cInterleavedMatchesNaive) {
  for (bool tied : {false, true}) {
    const ModelConfig c = tiny_llama(RopeStyle::Interleaved, tied);
    Weights w;
    Shapes s;
    random_weights(c, 2, w, s);
    TempDir dir;
    write_llama2c(dir.file("model.bin"), c, w);
    const LoadedModel m = load_model(dir.file("model.bin"), "", false);
    EXPECT_EQ(m.config.rope_style, RopeStyle::Interleaved);
    EXPECT_EQ(m.config.n_kv_heads, 2);
    expect_matches_naive(m, c, w);
  }
}

TEST(Forward, OptMatchesNaive) {
  const ModelConfig c = tiny_opt();
  TempDir dir;
  Weights w;
  const LoadedModel m = random_hf_model(c, 3, dir.path(), &w);
  EXPECT_EQ(m.config.family->name, "opt");
  expect_matches_naive(m, c, w);
}

// The same weights in F32, F16 and BF16 files give identical logits (all values are BF16-exact).
TEST(Forward, HalfPrecisionFilesReadIntoF32) {
  const ModelConfig c = tiny_llama(RopeStyle::RotateHalf, false);
  Weights w;
  Shapes s;
  random_weights(c, 4, w, s);
  std::vector<std::vector<float>> results;
  for (const char* dtype : {"F32", "F16", "BF16"}) {
    TempDir dir;
    write_hf_folder(dir.path(), c, w, s, dtype);
    const LoadedModel m = load_model(dir.path().string(), "", false);
    std::vector<int> tokens = {1, 2, 3, 4, 5, 6};
    std::vector<float> hidden(6 * c.dim), logits(6 * c.vocab_size);
    m.model->forward(tokens, BatchShape{1, 6}, hidden.data());
    m.model->logits(hidden.data(), 6, logits.data());
    results.push_back(logits);
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

// HF stores q/k rows permuted so that rotate-half equals Meta's interleaved rotation: a llama2.c
// file and an HF folder of the permuted weights must agree (what kdoc-6.8M checks on real weights).
TEST(Forward, HuggingFacePermutationEqualsLlama2c) {
  ModelConfig c = tiny_llama(RopeStyle::Interleaved, false);
  Weights w;
  Shapes s;
  random_weights(c, 5, w, s);
  Weights hf = w;
  const int hd = c.head_dim();
  for (int l = 0; l < c.n_layers; ++l)
    for (const auto& [name, heads] : {std::pair<std::string, int>{"q_proj", c.n_heads}, {"k_proj", c.n_kv_heads}}) {
      const std::string key = "model.layers." + std::to_string(l) + ".self_attn." + name + ".weight";
      const auto& meta = w.at(key);
      auto& out = hf.at(key);
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < hd / 2; ++i)
          for (int a = 0; a < 2; ++a)
            for (int col = 0; col < c.dim; ++col)
              out[(h * hd + a * hd / 2 + i) * c.dim + col] = meta[(h * hd + 2 * i + a) * c.dim + col];
    }
  TempDir dir;
  write_llama2c(dir.file("model.bin"), c, w);
  write_hf_folder(dir.path() / "hf", c, hf, s);
  const LoadedModel a = load_model(dir.file("model.bin"), "", false);
  const LoadedModel b = load_model((dir.path() / "hf").string(), "", false);
  std::vector<int> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
  std::vector<float> ha(10 * c.dim), hb(ha.size()), la(10 * c.vocab_size), lb(la.size());
  a.model->forward(tokens, BatchShape{1, 10}, ha.data());
  b.model->forward(tokens, BatchShape{1, 10}, hb.data());
  a.model->logits(ha.data(), 10, la.data());
  b.model->logits(hb.data(), 10, lb.data());
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-4) << i;
}

// The observer sees every linear of every block once per forward, with its true input width.
TEST(Forward, ObserverSeesEveryLinearInput) {
  const ModelConfig c = tiny_llama(RopeStyle::RotateHalf, true);
  TempDir dir;
  const LoadedModel m = random_hf_model(c, 6, dir.path());
  struct Recorder : LinearObserver {
    std::vector<std::string> seen;
    void observe(int block, const Linear& l, const float*, int64_t rows) override {
      seen.push_back(std::to_string(block) + ":" + l.name + ":" + std::to_string(rows) + "x" +
                     std::to_string(l.in_features()));
    }
  } rec;
  std::vector<int> tokens(8, 1);
  std::vector<float> hidden(8 * c.dim);
  m.model->forward(tokens, BatchShape{2, 4}, hidden.data(), &rec);
  ASSERT_EQ(rec.seen.size(), 14u);
  EXPECT_EQ(rec.seen[0], "0:attn.q:8x32");
  EXPECT_EQ(rec.seen[6], "0:mlp.down:8x72");
  EXPECT_EQ(rec.seen[13], "1:mlp.down:8x72");
}

}  // namespace
}  // namespace baq::test
