// The calibration pipeline on a tiny model: Hessians equal a direct 2·XᵀX/n, the sequential
// protocol feeds block b+1 with the quantized block b's outputs, and runs are deterministic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "baq/half.hpp"
#include "calib/hessian_collector.hpp"
#include "calib/layer_sensitivity.hpp"
#include "calib/outlier_smoothing.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

ModelConfig tiny() { return small_llama(16, 43, 2, 4, 2, 37, 16, false); }  // 43: a prime width

std::vector<int> tokens_of(int n, int vocab) {
  std::vector<int> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[i] = (i * 7 + i / 3) % vocab;
  return t;
}

TEST(Calibration, SamplerIsSeededAndInRange) {
  const auto t = tokens_of(100, 1000);
  const auto a = sample_calibration_windows(t, 5, 10, 42), b = sample_calibration_windows(t, 5, 10, 42);
  const auto c = sample_calibration_windows(t, 5, 10, 43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ASSERT_EQ(a.size(), 50u);
  for (int w = 0; w < 5; ++w)  // each window is a contiguous run of the text
    for (int i = 1; i < 10; ++i) EXPECT_EQ(std::find(t.begin(), t.end(), a[w * 10 + i]) - std::find(t.begin(), t.end(), a[w * 10 + i - 1]), 1);
  EXPECT_THROW(sample_calibration_windows(t, 1, 100, 0), Error);
}

// Records every linear's inputs so the test can form 2·XᵀX/n itself.
struct InputRecorder : LinearObserver {
  std::map<std::string, std::vector<float>> inputs;
  void observe(int block, const Linear& l, const float* x, int64_t rows) override {
    if (block != 0) return;
    auto& v = inputs[l.name];
    v.insert(v.end(), x, x + rows * l.in_features());
  }
};

TEST(Calibration, HessianEqualsTwoXtXOverN) {
  const ModelConfig c = tiny();
  TempDir dir;
  const LoadedModel m = random_hf_model(c, 31, dir.path());
  const auto tokens = tokens_of(3 * 12, c.vocab_size);
  std::vector<float> x(tokens.size() * c.dim), x2(x.size());
  m.model->embed(tokens, BatchShape{3, 12}, x.data());
  x2 = x;
  HessianCollector collector(0);
  InputRecorder rec;
  // Two batches into the collector (as the pipeline feeds it), one pass for the recorder.
  m.model->block(0).forward(x.data(), BatchShape{2, 12}, &collector);
  m.model->block(0).forward(x.data() + 2 * 12 * c.dim, BatchShape{1, 12}, &collector);
  m.model->block(0).forward(x2.data(), BatchShape{3, 12}, &rec);
  for (const std::string name : {"attn.q", "attn.v", "attn.o", "mlp.up", "mlp.down"}) {
    const auto& X = rec.inputs.at(name);
    const int64_t cols = name == "mlp.down" ? c.hidden_dim : c.dim, n = static_cast<int64_t>(X.size()) / cols;
    ASSERT_EQ(n, 36);
    const auto& h = collector.hessian(name);
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double ref = 0;
        for (int64_t t = 0; t < n; ++t) ref += 2.0 * X[t * cols + i] * X[t * cols + j] / n;
        EXPECT_NEAR(h[i * cols + j], ref, 1e-4 * (1 + std::abs(ref))) << name << " " << i << "," << j;
      }
  }
}

// The head reads one buffer batch after batch: every batch counts (it once aliased itself and kept the
// first batch only), while another linear reading the same buffer shares the Hessian.
TEST(Calibration, OneLinearFedOneBufferAccumulatesEveryBatch) {
  const ModelConfig c = tiny();
  TempDir dir;
  const LoadedModel m = random_hf_model(c, 33, dir.path());
  const Linear& head = m.model->head();
  const int64_t rows = 5, cols = head.in_features();
  std::vector<float> buffer(static_cast<size_t>(rows * cols)), all;
  HessianCollector collector(0);
  for (int batch = 0; batch < 2; ++batch) {
    for (int64_t i = 0; i < rows * cols; ++i) buffer[static_cast<size_t>(i)] = std::sin(0.37f * static_cast<float>(i) + 1.3f * static_cast<float>(batch));
    all.insert(all.end(), buffer.begin(), buffer.end());
    collector.observe(0, head, buffer.data(), rows);
  }
  const auto& h = collector.hessian(head.name);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double ref = 0;
      for (int64_t t = 0; t < 2 * rows; ++t) ref += 2.0 * all[static_cast<size_t>(t * cols + i)] * all[static_cast<size_t>(t * cols + j)];
      EXPECT_NEAR(h[static_cast<size_t>(i * cols + j)], ref / (2 * rows), 1e-5 * (1 + std::abs(ref))) << i << "," << j;
    }
}

TEST(Calibration, SequentialGptqBeatsRtnAndIsDeterministic) {
  const ModelConfig c = tiny();
  TempDir dir;
  random_hf_model(c, 32, dir.path());
  const auto calib = sample_calibration_windows(tokens_of(400, c.vocab_size), 12, 16, 1);
  std::vector<QuantizeRun> runs;
  std::vector<std::vector<float>> weights;
  for (auto method : {QuantMethod::Rtn, QuantMethod::Gptq, QuantMethod::Gptq}) {
    LoadedModel m = load_model(dir.path().string(), "", false);
    QuantizeOptions o;
    o.method = method;
    o.settings.bits = 3;
    o.settings.group_size = 8;  // 43 = 5 groups of 8 + a partial group of 3
    o.batch_windows = 5;
    int calls = 0;
    o.on_layer = [&](const LayerRecord&, int done, int total) {
      ++calls;
      EXPECT_EQ(total, 14);
      EXPECT_EQ(done, calls);
    };
    runs.push_back(quantize_model(*m.model, calib, 16, o));
    EXPECT_EQ(calls, 14);
    const Tensor q = dequantize(*m.model->block(1).linears()[6]->packed);
    weights.push_back(std::vector<float>(q.span().begin(), q.span().end()));
  }
  const QuantizeRun &rtn = runs[0], &gptq = runs[1];
  ASSERT_EQ(gptq.layers.size(), 14u);
  EXPECT_EQ(gptq.layers[6].name, "blocks.0.mlp.down");
  EXPECT_EQ(gptq.layers[6].n_groups, 6);
  // Block 0 sees the same inputs under both methods: GPTQ's proxy loss must be lower per layer.
  for (int i = 0; i < 7; ++i) EXPECT_LT(gptq.layers[i].proxy_loss, rtn.layers[i].proxy_loss) << gptq.layers[i].name;
  // Exact accounting: 3-bit codes as a 2-bit and a 1-bit plane, bytes per row from the closed form
  // (128-column chunks whole, the rest dense); F16 min and max per (row, group).
  int64_t weights_n = 0;
  double bits = 0;
  auto plane = [](int64_t cols, int w) { return cols / 128 * 16 * w + (cols % 128 * w + 7) / 8; };
  for (const auto& l : gptq.layers) {
    weights_n += l.rows * l.cols;
    bits += l.rows * (plane(l.cols, 2) + plane(l.cols, 1)) * 8.0 + 32.0 * l.rows * l.n_groups;
  }
  EXPECT_EQ(gptq.quantized_weights, weights_n);
  EXPECT_DOUBLE_EQ(gptq.bits_per_weight(), bits / weights_n);
  EXPECT_EQ(weights[1], weights[2]);  // same settings, same result
  EXPECT_NE(weights[0], weights[1]);
  // Quantized weights lie on a 3-bit grid: at most 8 distinct values per row and group.
  const auto& q = weights[1];
  for (int64_t r = 0; r < c.dim; ++r) {
    std::set<float> values(q.begin() + r * c.hidden_dim, q.begin() + r * c.hidden_dim + 8);
    EXPECT_LE(values.size(), 8u);
  }
}

// A stored budget (--bpw) holds for every layer as packed, for RTN/GPTQ (bits and grid per layer)
// and for BAQ per layer and model-wide (allocation lowered until codes, widths and ranges fit).
TEST(Calibration, StoredBudgetsHoldAsPacked) {
  const ModelConfig c = small_llama(64, 172, 2, 4, 2, 37, 16, false);  // stories260K's widths
  TempDir dir;
  random_hf_model(c, 34, dir.path());
  const auto calib = sample_calibration_windows(tokens_of(400, c.vocab_size), 12, 16, 3);
  for (auto [method, alloc, bpw] : {std::tuple{QuantMethod::Gptq, Allocation::Layer, 3.3},
                                    std::tuple{QuantMethod::Rtn, Allocation::Layer, 4.6},
                                    std::tuple{QuantMethod::Baq, Allocation::Layer, 3.3},
                                    std::tuple{QuantMethod::Baq, Allocation::Model, 3.0}}) {
    LoadedModel m = load_model(dir.path().string(), "", false);
    QuantizeOptions o;
    o.method = method;
    o.allocation = alloc;
    o.bpw = bpw;
    const QuantizeRun r = quantize_model(*m.model, calib, 16, o);
    double total = 0;
    for (const auto& l : r.layers) {
      const double per_weight = l.storage.total() / static_cast<double>(l.rows * l.cols);
      total += l.storage.total();
      if (alloc == Allocation::Layer) {
        EXPECT_LE(per_weight, bpw + 1e-12) << method_name(method) << " " << l.name;
        // Spent to within a grid step (uniform) or one bit per row (BAQ: rows are bit-granular, one
        // level more in a column costs at most a bit a row) of the budget.
        EXPECT_GT(per_weight, bpw - (method == QuantMethod::Baq ? 1.0 / l.cols : 1.0)) << method_name(method) << " " << l.name;
      }
    }
    EXPECT_LE(total / static_cast<double>(r.quantized_weights), bpw + 1e-12) << method_name(method);
    EXPECT_GT(total / static_cast<double>(r.quantized_weights), bpw - 0.6) << method_name(method);
  }
}

// Whole-model quantization: the head by GPTQ on the Hessian of the final-norm activations, an untied
// embedding rounded per row; both stored packed in the .baq and run from it.
TEST(Calibration, HeadAndEmbeddingQuantizedAndRunPacked) {
  for (bool tied : {false, true}) {
    ModelConfig c = small_llama(16, 43, 2, 4, 2, 37, 16, tied);
    TempDir dir;
    random_hf_model(c, 35, dir.path());
    const auto calib = sample_calibration_windows(tokens_of(400, c.vocab_size), 12, 16, 4);
    LoadedModel m = load_model(dir.path().string(), "", false);
    const Tensor embed_w = m.model->embeddings().to_f32();
    QuantizeOptions o;
    o.settings.bits = 4;
    o.head = QuantSettings{};
    o.head->bits = 3;
    o.embeddings = QuantSettings{};
    o.embeddings->bits = 2;
    o.embeddings->group_size = 8;
    const QuantizeRun r = quantize_model(*m.model, calib, 16, o);
    ASSERT_NE(m.model->head().packed, nullptr);
    ASSERT_NE(m.model->packed_embeddings(), nullptr);
    EXPECT_EQ(r.layers.back().name, "head");
    EXPECT_EQ(r.layers.front().name, tied ? "blocks.0.attn.q" : "embeddings");
    EXPECT_EQ(r.layers.size(), tied ? 15u : 16u);
    // Solved by GPTQ on its own Hessian (a proxy loss and a damping are recorded), 3 bits per column.
    const LayerRecord& head = r.layers.back();
    EXPECT_GT(head.proxy_loss, 0);
    EXPECT_GT(head.damp, 0);
    EXPECT_EQ(head.level_histogram.at(8), 16);
    // Tied: the embedding is the quantized head; untied: 2-bit rows in groups of 8.
    const PackedLinear& e = *m.model->packed_embeddings();
    if (tied) EXPECT_EQ(&e, m.model->head().packed.get());
    else EXPECT_EQ(e.n_groups, 2);
    const Tensor e_deq = dequantize(e);
    double err = 0, norm = 0;
    for (int64_t i = 0; i < e_deq.numel(); ++i) err += std::pow(e_deq.data[i] - embed_w.data[i], 2), norm += std::pow(embed_w.data[i], 2);
    EXPECT_LT(err, 0.5 * norm);
    EXPECT_GT(err, 0);
    // Written and read back: the same logits from the file as from memory.
    save_baq(dir.file("m.baq"), *m.model, nullptr, nlohmann::json::object());
    const LoadedModel back = load_model(dir.file("m.baq"), "", false);
    ASSERT_NE(back.model->packed_embeddings(), nullptr);
    ASSERT_NE(back.model->head().packed, nullptr);
    const std::vector<int> tokens = tokens_of(16, c.vocab_size);
    std::vector<float> h1(16 * 16), h2(16 * 16), l1(16 * 37), l2(16 * 37);
    m.model->forward(tokens, BatchShape{1, 16}, h1.data());
    m.model->logits(h1.data(), 16, l1.data());
    back.model->forward(tokens, BatchShape{1, 16}, h2.data());
    back.model->logits(h2.data(), 16, l2.data());
    EXPECT_EQ(l1, l2);
    // The embedding lookup is the dequantized row.
    std::vector<float> x(16);
    back.model->embed(std::vector<int>{5}, BatchShape{1, 1}, x.data());
    for (int i = 0; i < 16; ++i) EXPECT_EQ(x[i], e_deq.data[5 * 16 + i]);
  }
}

}  // namespace
}  // namespace baq::test

namespace baq::test {
namespace {

// Below what any uniform grid can store (2-bit codes and one F16 range per row: 4 bpw on 16-wide rows),
// BAQ still meets a stored budget from below with fewer levels, per layer and model-wide, where uniform
// GPTQ refuses.
TEST(Calibration, BaqGoesBelowTheSmallestUniformGrid) {
  const ModelConfig c = small_llama(64, 96, 1, 4, 4, 37, 16, false);
  TempDir dir;
  random_hf_model(c, 35, dir.path());
  const auto calib = sample_calibration_windows(tokens_of(400, c.vocab_size), 8, 16, 2);
  // 64-wide rows: one F16 range per row is 0.5 bpw, so uniform 2-bit codes need 2.5 (BAQ adds 8 bits
  // of level count a column, 0.125 bpw here).
  constexpr double kBpw = 2.4;
  for (QuantMethod method : {QuantMethod::Gptq, QuantMethod::Baq})
    for (Allocation alloc : {Allocation::Layer, Allocation::Model}) {
      LoadedModel m = load_model(dir.path().string(), "", false);
      QuantizeOptions o;
      o.method = method;
      o.allocation = alloc;
      o.bpw = kBpw;
      if (method == QuantMethod::Gptq) {
        EXPECT_THROW(quantize_model(*m.model, calib, 16, o), Error);
        continue;
      }
      const QuantizeRun r = quantize_model(*m.model, calib, 16, o);
      EXPECT_LE(r.bits_per_weight(), kBpw + 1e-9);
      for (const auto& l : r.layers)
        if (alloc == Allocation::Layer) {  // model-wide moves bits between layers
          EXPECT_LE(l.storage.total() / static_cast<double>(l.rows * l.cols), kBpw + 1e-9) << l.name;
          if (l.cols == 64) {  // no uniform alternative to fall back to; under two code bits a weight
            EXPECT_FALSE(l.baq_fell_back) << l.name;
            EXPECT_LT(l.bits, 2.0) << l.name;
          }
        }
    }
}

// Under a stored budget BAQ per layer is checked against uniform GPTQ at the same stored bits on the
// model's output: both candidates measured, the lower kept; when uniform GPTQ wins, the file is a
// GPTQ --bpw run's, layer for layer.
TEST(Calibration, BaqUnderAStoredBudgetIsCheckedAgainstUniformGptq) {
  const ModelConfig c = small_llama(64, 96, 1, 4, 4, 37, 16, false);
  TempDir dir;
  random_hf_model(c, 36, dir.path());
  const auto calib = sample_calibration_windows(tokens_of(400, c.vocab_size), 8, 16, 2);
  auto run = [&](QuantMethod method) {
    LoadedModel m = load_model(dir.path().string(), "", false);
    QuantizeOptions o;
    o.method = method;
    o.bpw = 3.0;
    int last = 0, total = 0;
    o.on_layer = [&](const LayerRecord&, int done, int t) { last = done, total = t; };
    QuantizeRun r = quantize_model(*m.model, calib, 16, o);
    EXPECT_EQ(last, total);
    EXPECT_EQ(total, method == QuantMethod::Baq ? 21 : 7);  // BAQ: two candidates and the final pass
    return r;
  };
  const QuantizeRun baq = run(QuantMethod::Baq), gptq = run(QuantMethod::Gptq);
  ASSERT_TRUE(baq.allocation_check.has_value());
  const auto& check = *baq.allocation_check;
  EXPECT_EQ(check.model_wide_kld, -1.0);
  EXPECT_GT(check.per_layer_kld, 0.0);
  EXPECT_GT(check.uniform_kld, 0.0);
  EXPECT_EQ(check.chosen, check.per_layer_kld <= check.uniform_kld ? "layer" : "uniform");
  EXPECT_FALSE(gptq.allocation_check.has_value());
  ASSERT_EQ(baq.layers.size(), gptq.layers.size());
  for (size_t i = 0; i < baq.layers.size(); ++i)
    if (check.chosen == "uniform") {
      EXPECT_EQ(baq.layers[i].proxy_loss, gptq.layers[i].proxy_loss) << baq.layers[i].name;
    } else {
      EXPECT_LE(baq.layers[i].storage.total(), 3.0 * static_cast<double>(baq.layers[i].rows * baq.layers[i].cols)) << baq.layers[i].name;
    }
}

// BAQ through the pipeline: every layer's code bits meet a fractional budget to within 1/columns
// (per layer) or the pooled budget holds (model-wide), levels go beyond powers of two, and the
// summed proxy loss is below GPTQ's at the same integer budget.
TEST(Calibration, BaqMeetsBudgetsPerLayerAndModelWide) {
  const ModelConfig c = tiny();
  TempDir dir;
  random_hf_model(c, 33, dir.path());
  const auto calib = sample_calibration_windows(tokens_of(400, c.vocab_size), 12, 16, 2);
  auto run = [&](QuantMethod method, double rate, Allocation alloc, double margin = 0.9) {
    LoadedModel m = load_model(dir.path().string(), "", false);
    QuantizeOptions o;
    o.method = method;
    o.settings.bits = static_cast<int>(rate);
    o.rate = rate;
    o.allocation = alloc;
    o.model_wide_margin = margin;
    int last = 0, total = 0;
    o.on_layer = [&](const LayerRecord&, int done, int t) { last = done, total = t; };
    QuantizeRun r = quantize_model(*m.model, calib, 16, o);
    EXPECT_EQ(last, total);
    // Model-wide: measure, sensitivities, both candidate allocations, the final pass.
    EXPECT_EQ(total, alloc == Allocation::Model && method == QuantMethod::Baq ? 70 : 14);
    return r;
  };
  const QuantizeRun layer = run(QuantMethod::Baq, 2.5, Allocation::Layer);
  std::set<int> levels_seen;
  for (const auto& l : layer.layers) {
    EXPECT_LE(l.bits, 2.5 + 1e-12) << l.name;
    EXPECT_GT(l.bits, 2.5 - 1.0 / l.cols) << l.name;
    EXPECT_LT(l.predicted_loss_ratio, 1.0) << l.name;
    int cols = 0;
    for (const auto& [L, n] : l.level_histogram) levels_seen.insert(L), cols += n;
    EXPECT_EQ(cols, l.cols);
    EXPECT_DOUBLE_EQ(l.storage.widths, 8.0 * l.cols);
  }
  EXPECT_TRUE(levels_seen.count(3) || levels_seen.count(5) || levels_seen.count(6) || levels_seen.count(7));
  // Stored code bits add the slack of 64-bit words to the allocated mean log2 L.
  EXPECT_GE(layer.code_bits_per_weight(), 2.5 - 1.0 / 16);

  // Model-wide: the pooled mean of log2 L_j, weighted by rows, meets the budget; the allocation was
  // checked against the per-layer one by the model's output, and the final pass used the better.
  // Falling back (margin 0: the per-layer candidate always preferred) reproduces a per-layer run
  // exactly, outlier smoothing included; by default model-wide is kept when 10 % better.
  const QuantizeRun fell_back = run(QuantMethod::Baq, 3.0, Allocation::Model, 0.0);
  ASSERT_TRUE(fell_back.allocation_check.has_value());
  EXPECT_EQ(fell_back.allocation_check->chosen, "layer");
  EXPECT_EQ(fell_back.allocation_check->uniform_kld, -1.0);  // a code-bit budget: no uniform candidate
  EXPECT_GT(fell_back.allocation_check->per_layer_kld, 0.0);
  EXPECT_EQ(fell_back.allocation_check->tokens, 12 * 16);
  const QuantizeRun layer3 = run(QuantMethod::Baq, 3.0, Allocation::Layer);
  ASSERT_EQ(fell_back.layers.size(), layer3.layers.size());
  for (size_t i = 0; i < layer3.layers.size(); ++i) {
    EXPECT_EQ(fell_back.layers[i].proxy_loss, layer3.layers[i].proxy_loss) << layer3.layers[i].name;
    EXPECT_EQ(fell_back.layers[i].levels, layer3.layers[i].levels) << layer3.layers[i].name;
    EXPECT_EQ(fell_back.layers[i].input_smoothing, layer3.layers[i].input_smoothing) << layer3.layers[i].name;
  }
  const QuantizeRun checked = run(QuantMethod::Baq, 3.0, Allocation::Model);
  EXPECT_EQ(checked.allocation_check->chosen == "model", checked.allocation_check->model_wide_kld <= 0.9 * checked.allocation_check->per_layer_kld);
  const QuantizeRun model = run(QuantMethod::Baq, 3.0, Allocation::Model, std::numeric_limits<double>::infinity());
  ASSERT_EQ(model.allocation_check->chosen, "model");
  double allocated = 0;
  for (const auto& l : model.layers) allocated += l.bits * l.rows * l.cols;
  allocated /= static_cast<double>(model.quantized_weights);
  EXPECT_LE(allocated, 3.0 + 1e-12);
  EXPECT_GT(allocated, 3.0 - 43.0 / static_cast<double>(model.quantized_weights));
  double spread_lo = 8, spread_hi = 0;  // sensitive layers get more bits than others
  for (const auto& l : model.layers) spread_lo = std::min(spread_lo, l.bits), spread_hi = std::max(spread_hi, l.bits);
  EXPECT_GT(spread_hi - spread_lo, 0.1);

  const QuantizeRun gptq = run(QuantMethod::Gptq, 3.0, Allocation::Layer);
  const QuantizeRun baq3 = run(QuantMethod::Baq, 3.0, Allocation::Layer);
  double pg = 0, pb = 0;
  for (size_t i = 0; i < gptq.layers.size(); ++i) pg += gptq.layers[i].proxy_loss, pb += baq3.layers[i].proxy_loss;
  EXPECT_LT(pb, pg);
  for (size_t i = 0; i < 7; ++i)  // block 0 sees identical inputs: pass 1 is GPTQ itself
    EXPECT_NEAR(baq3.layers[i].loss_before, gptq.layers[i].loss, 1e-9 * gptq.layers[i].loss) << gptq.layers[i].name;
}

// Model-wide sensitivity: each linear's KL divergence (re-running only the blocks from its own, on
// cached inputs) equals a naive full forward of the model with that linear alone quantized, KL
// summed in double from log-sum-exp; the model is left unquantized. And with every linear quantized.
TEST(Calibration, LayerKldEqualsAFullForwardWithThatLayerQuantized) {
  const ModelConfig c = tiny();
  TempDir dir;
  random_hf_model(c, 41, dir.path());
  LoadedModel m = load_model(dir.path().string(), "", false);
  const auto calib = sample_calibration_windows(tokens_of(400, c.vocab_size), 6, 16, 3);
  QuantSettings s;
  s.bits = 3;
  std::vector<std::shared_ptr<const PackedLinear>> packs;
  for (int b = 0; b < m.model->n_blocks(); ++b)
    for (Linear* l : m.model->block(b).linears()) {
      const Tensor w = l->weight.to_f32();
      packs.push_back(std::make_shared<PackedLinear>(pack_linear(quantize_rtn(w.data, l->out_features(), l->in_features(), s), s)));
    }
  int calls = 0;
  const OutputReference ref = output_reference(*m.model, calib, 16, 64);
  ASSERT_EQ(ref.tokens.size(), 64u);
  const std::vector<double> kld = layer_klds(*m.model, ref, packs, [&](int done, int total) {
    ++calls;
    EXPECT_EQ(done, calls);
    EXPECT_EQ(total, 14);
  });
  ASSERT_EQ(kld.size(), 14u);
  EXPECT_EQ(calls, 14);
  for (int b = 0; b < m.model->n_blocks(); ++b)
    for (Linear* l : m.model->block(b).linears()) EXPECT_EQ(l->packed, nullptr);
  // The naive reference: 4 windows of 16 tokens (64 tokens), the whole model, KL per position.
  const std::span<const int> tokens(calib.data(), 64);
  const int64_t vocab = c.vocab_size;
  auto log_probs = [&](const Model& model) {
    std::vector<float> hidden(static_cast<size_t>(64 * c.dim)), logits(static_cast<size_t>(64 * vocab));
    model.forward(tokens, BatchShape{4, 16}, hidden.data());
    model.logits(hidden.data(), 64, logits.data());
    std::vector<double> lp(logits.size());
    for (int64_t r = 0; r < 64; ++r) {
      double mx = -1e300, sum = 0;
      for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, static_cast<double>(logits[r * vocab + v]));
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(logits[r * vocab + v] - mx);
      for (int64_t v = 0; v < vocab; ++v) lp[r * vocab + v] = logits[r * vocab + v] - mx - std::log(sum);
    }
    return lp;
  };
  const std::vector<double> reference = log_probs(*m.model);
  for (size_t i : {size_t{0}, size_t{3}, size_t{6}, size_t{9}, size_t{13}}) {
    Linear* l = m.model->block(static_cast<int>(i / 7)).linears()[i % 7];
    l->packed = packs[i];
    const std::vector<double> q = log_probs(*m.model);
    l->packed.reset();
    double kl = 0;
    for (size_t k = 0; k < q.size(); ++k) kl += std::exp(reference[k]) * (reference[k] - q[k]);
    kl /= 64;
    EXPECT_GT(kl, 0.0) << i;
    EXPECT_NEAR(kld[i], kl, 1e-4 * kl + 1e-12) << i;
  }
  // The whole model quantized (what --alloc model compares its two allocations by).
  size_t k = 0;
  for (int b = 0; b < m.model->n_blocks(); ++b)
    for (Linear* l : m.model->block(b).linears()) l->packed = packs[k++];
  const std::vector<double> q = log_probs(*m.model);
  double kl = 0;
  for (size_t i = 0; i < q.size(); ++i) kl += std::exp(reference[i]) * (reference[i] - q[i]);
  kl /= 64;
  EXPECT_GT(kl, kld[0]);
  EXPECT_NEAR(output_kld(*m.model, ref), kl, 1e-4 * kl);
}


// Smoothing a norm's output preserves the model's function: the norm divided per channel (RMS, and
// RMS(1 + w), whose stored w becomes (1 + w)/s − 1) while the linears reading it, still unpacked,
// multiply their input back.
TEST(OutlierSmoothing, ScaledNormWithScaledInputsPreservesTheFunction) {
  for (NormKind kind : {NormKind::Rms, NormKind::RmsPlusOne}) {
    ModelConfig c = tiny();
    c.norm = kind;
    TempDir dir;
    LoadedModel m = random_hf_model(c, 52, dir.path());
    std::vector<int> tokens(24);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 11 + 3) % static_cast<size_t>(c.vocab_size));
    std::vector<float> before(tokens.size() * static_cast<size_t>(c.dim)), after(before.size());
    m.model->forward(tokens, BatchShape{2, 12}, before.data());
    std::vector<float> scale(static_cast<size_t>(c.dim));
    for (size_t j = 0; j < scale.size(); ++j) scale[j] = static_cast<float>(std::exp2(std::sin(1.7 * static_cast<double>(j)) * 3));
    for (int b = 0; b < m.model->n_blocks(); ++b)
      for (int input : {0, 2}) {
        std::vector<float> applied = scale;
        ASSERT_TRUE(m.model->block(b).scale_norm_output(input, applied));
        for (size_t j = 0; j < scale.size(); ++j) EXPECT_NEAR(applied[j], scale[j], 0.004 * scale[j]);
        for (Linear* l : m.model->block(b).linears())
          if (l->input == input) l->input_scale = applied;
      }
    for (const auto& [name, t] : m.model->block(0).tensors())  // the divided norms are BF16 values
      if (name.find("norm") != std::string::npos) {
        for (float v : t->span()) EXPECT_EQ(v, round_to_bf16(v)) << name;
      }
    std::vector<float> unused = scale;
    EXPECT_FALSE(m.model->block(0).scale_norm_output(1, unused));  // o reads the attention, not a norm
    EXPECT_FALSE(m.model->block(0).scale_norm_output(3, unused));
    EXPECT_EQ(unused, scale);
    m.model->forward(tokens, BatchShape{2, 12}, after.data());
    double worst = 0, top = 0;
    for (size_t i = 0; i < before.size(); ++i)
      worst = std::max(worst, static_cast<double>(std::abs(after[i] - before[i]))), top = std::max(top, static_cast<double>(std::abs(before[i])));
    EXPECT_LT(worst, 1e-5 * top) << static_cast<int>(kind);
  }
}

// Naive double proxy loss tr((W−Q)H(W−Q)ᵀ).
double naive_proxy(const std::vector<float>& w, const std::vector<float>& q, int64_t rows, int64_t cols, const std::vector<double>& h) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j)
        total += (w[r * cols + i] - q[r * cols + i]) * h[i * cols + j] * (w[r * cols + j] - q[r * cols + j]);
  return total;
}

// Planted outliers as in kdoc-6.8M-outliers: four input channels ×32 with their weight columns ÷32
// (the same function). RTN's per-row grid then has no levels for those columns; the chosen smoothing
// undoes most of it — its RTN proxy loss, computed naively in the original coordinates (Q·S⁻¹ against
// W and H), is at most half of RTN's on the weights as they are. Without outliers it changes little.
TEST(OutlierSmoothing, ChoosesAStrengthThatEvensOutPlantedOutliers) {
  const int64_t rows = 48, cols = 40, n = 400;
  std::mt19937 rng(5);
  std::normal_distribution<double> g(0.0, 1.0);
  for (bool planted : {true, false}) {
    std::vector<float> w(static_cast<size_t>(rows * cols));
    for (float& v : w) v = static_cast<float>(g(rng));
    std::vector<double> x(static_cast<size_t>(n * cols));
    for (double& v : x) v = g(rng);
    if (planted)
      for (int64_t c : {3, 17, 18, 31}) {
        for (int64_t t = 0; t < n; ++t) x[t * cols + c] *= 32;
        for (int64_t r = 0; r < rows; ++r) w[r * cols + c] /= 32;
      }
    std::vector<double> h(static_cast<size_t>(cols * cols), 0.0);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j < cols; ++j) h[i * cols + j] += 2.0 * x[t * cols + i] * x[t * cols + j] / n;
    QuantSettings s;
    s.bits = 3;
    const Tensor wt = Tensor::view({rows, cols}, w.data(), nullptr);
    const InputSmoothing chosen = choose_input_smoothing({&wt}, h, s);
    const QuantizedMatrix plain = quantize_rtn(w.data(), rows, cols, s);
    const double loss_plain = naive_proxy(w, plain.dequant, rows, cols, h);
    double loss_chosen = loss_plain;
    if (!chosen.scale.empty()) {
      std::vector<float> ws = w;
      scale_columns(ws.data(), rows, cols, chosen.scale);
      QuantizedMatrix q = quantize_rtn(ws.data(), rows, cols, s);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) q.dequant[r * cols + j] /= chosen.scale[static_cast<size_t>(j)];
      loss_chosen = naive_proxy(w, q.dequant, rows, cols, h);
    }
    if (planted) {
      EXPECT_GT(chosen.alpha, 0.0);
      EXPECT_LT(loss_chosen, 0.5 * loss_plain);
    } else {
      EXPECT_LE(loss_chosen, loss_plain * (1 + 1e-6));
      EXPECT_GT(loss_chosen, 0.7 * loss_plain);
    }
  }
}

}  // namespace
}  // namespace baq::test
