// Perplexity protocols: the window plans by hand, and the evaluator against a direct computation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "baq/error.hpp"
#include "baq/perplexity.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

TEST(PlanWindows, WindowsDropTheTail) {
  const auto plan = plan_windows(10, PplProtocol::Windows, 4, 0, 1);
  ASSERT_EQ(plan.size(), 2u);  // tokens 0-3, 4-7; 8-9 dropped
  EXPECT_EQ(plan[1].start, 4);
  EXPECT_EQ(plan[1].score_begin, 0);
  EXPECT_EQ(plan[1].score_end, 3);  // 3 predictions per window
}

TEST(PlanWindows, StreamScoresEveryTokenAfterTheFirst) {
  const auto plan = plan_windows(10, PplProtocol::Stream, 4, 0, 1);
  ASSERT_EQ(plan.size(), 3u);  // inputs 0-3, 4-7, 8 (predicting 9)
  int scored = 0;
  for (const auto& w : plan) scored += w.score_end - w.score_begin;
  EXPECT_EQ(scored, 9);
  EXPECT_EQ(plan[2].start, 8);
  EXPECT_EQ(plan[2].length, 1);
}

TEST(PlanWindows, LlamaCppScoresTheSecondHalfAfterBos) {
  const auto plan = plan_windows(17, PplProtocol::LlamaCpp, 8, 0, 7);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].bos, 7);
  EXPECT_EQ(plan[0].score_begin, 4);
  EXPECT_EQ(plan[0].score_end, 7);
  EXPECT_EQ(plan_windows(17, PplProtocol::LlamaCpp, 8, 1, 7).size(), 1u);  // --max-windows
  EXPECT_THROW(plan_windows(5, PplProtocol::Windows, 8, 0, 1), Error);
}

ModelConfig tiny() { return small_llama(16, 20, 1, 2, 2, 19, 8, true); }

// NLL of every scored position computed one window at a time, in double, from the model's logits.
double direct_mean_nll(const Model& m, const std::vector<int>& tokens, const std::vector<EvalWindow>& plan) {
  double sum = 0;
  int64_t n = 0;
  const int V = m.config().vocab_size;
  for (const auto& w : plan) {
    std::vector<int> in(tokens.begin() + w.start, tokens.begin() + w.start + w.length);
    if (w.bos >= 0) in[0] = w.bos;
    std::vector<float> hidden(w.length * m.config().dim), logits(w.length * V);
    m.forward(in, BatchShape{1, w.length}, hidden.data());
    m.logits(hidden.data(), w.length, logits.data());
    for (int p = w.score_begin; p < w.score_end; ++p) {
      double z = 0;
      for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(logits[p * V + v]));
      sum += std::log(z) - logits[p * V + tokens[w.start + p + 1]];
      ++n;
    }
  }
  return sum / n;
}

TEST(EvaluatePerplexity, EveryProtocolMatchesDirectComputation) {
  const ModelConfig c = tiny();
  TempDir dir;
  const LoadedModel m = random_hf_model(c, 11, dir.path());
  std::vector<int> tokens(45);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * i + 3 * i) % c.vocab_size);
  for (auto protocol : {PplProtocol::Windows, PplProtocol::Stream, PplProtocol::LlamaCpp}) {
    PplOptions o;
    o.protocol = protocol;
    o.seqlen = 8;
    int64_t calls = 0;
    o.progress = [&](int64_t, int64_t) { ++calls; };
    const PplResult r = evaluate_perplexity(*m.model, tokens, o);
    const auto plan = plan_windows(45, protocol, 8, 0, c.bos_id);
    EXPECT_NEAR(r.mean_nll, direct_mean_nll(*m.model, tokens, plan), 1e-5) << protocol_name(protocol);
    EXPECT_NEAR(r.perplexity(), std::exp(r.mean_nll), 1e-9);
    EXPECT_GT(r.stderr_nll, 0.0);
    EXPECT_GT(calls, 0);
  }
  PplOptions o;
  o.seqlen = 9;  // beyond the model's context of 8
  EXPECT_THROW(evaluate_perplexity(*m.model, tokens, o), Error);
}

// KL(FP‖Q) per token against a direct computation; a model against itself has KL 0 and agrees fully.
TEST(EvaluatePerplexity, KlDivergenceAgainstReference) {
  const ModelConfig c = tiny();
  Weights w;
  Shapes s;
  random_weights(c, 12, w, s);
  TempDir dir;
  write_hf_folder(dir.path() / "fp", c, w, s);
  for (auto& v : w.at("model.layers.0.mlp.down_proj.weight")) v *= 1.5;  // a perturbed "quantized" model
  write_hf_folder(dir.path() / "q", c, w, s);
  const LoadedModel fp = load_model((dir.path() / "fp").string(), "", false);
  const LoadedModel q = load_model((dir.path() / "q").string(), "", false);
  std::vector<int> tokens(33);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((5 * i + 1) % c.vocab_size);
  PplOptions o;
  o.seqlen = 8;
  KldResult self;
  evaluate_perplexity(*fp.model, tokens, o, fp.model.get(), &self);
  EXPECT_NEAR(self.kl_mean, 0.0, 1e-9);
  EXPECT_EQ(self.top1_agreement, 1.0);
  EXPECT_NEAR(self.dp_rms, 0.0, 1e-9);

  KldResult k;
  const PplResult pq = evaluate_perplexity(*q.model, tokens, o, fp.model.get(), &k);
  const PplResult pp = evaluate_perplexity(*fp.model, tokens, o);
  EXPECT_NEAR(k.reference.mean_nll, pp.mean_nll, 1e-9);
  // Direct: per scored position, softmaxes of both models in double.
  const int V = c.vocab_size;
  std::vector<double> kls;
  double dp = 0;
  for (const auto& win : plan_windows(33, PplProtocol::Windows, 8, 0, 1)) {
    std::vector<int> in(tokens.begin() + win.start, tokens.begin() + win.start + win.length);
    std::vector<float> hp(8 * c.dim), hq(hp.size()), lp(8 * V), lq(lp.size());
    fp.model->forward(in, BatchShape{1, 8}, hp.data());
    q.model->forward(in, BatchShape{1, 8}, hq.data());
    fp.model->logits(hp.data(), 8, lp.data());
    q.model->logits(hq.data(), 8, lq.data());
    for (int p = win.score_begin; p < win.score_end; ++p) {
      double zp = 0, zq = 0;
      for (int v = 0; v < V; ++v) zp += std::exp(double(lp[p * V + v])), zq += std::exp(double(lq[p * V + v]));
      double kl = 0;
      for (int v = 0; v < V; ++v) {
        const double P = std::exp(double(lp[p * V + v])) / zp, Q = std::exp(double(lq[p * V + v])) / zq;
        kl += P * std::log(P / Q);
      }
      kls.push_back(kl);
      const int t = tokens[win.start + p + 1];
      dp += std::exp(double(lq[p * V + t])) / zq - std::exp(double(lp[p * V + t])) / zp;
    }
  }
  double mean = 0;
  for (double v : kls) mean += v / kls.size();
  EXPECT_GT(mean, 1e-4);  // the perturbation is visible
  EXPECT_NEAR(k.kl_mean, mean, 1e-5 * (1 + mean));
  EXPECT_NEAR(k.kl_max, *std::max_element(kls.begin(), kls.end()), 1e-5);
  EXPECT_NEAR(k.dp_mean, dp / kls.size(), 1e-6);
  EXPECT_EQ(pq.predicted, static_cast<int64_t>(kls.size()));
  EXPECT_LE(k.kl_median, k.kl_p99);
  EXPECT_LE(k.kl_p99, k.kl_max);
}

}  // namespace
}  // namespace baq::test
