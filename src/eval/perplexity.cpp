#include "baq/perplexity.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "baq/error.hpp"

namespace baq {

PplProtocol parse_protocol(const std::string& name) {
  if (name == "windows") return PplProtocol::Windows;
  if (name == "stream") return PplProtocol::Stream;
  if (name == "llamacpp") return PplProtocol::LlamaCpp;
  fail("unknown perplexity protocol '{}' (windows, stream or llamacpp)", name);
}

const char* protocol_name(PplProtocol protocol) {
  switch (protocol) {
    case PplProtocol::Windows: return "windows";
    case PplProtocol::Stream: return "stream";
    case PplProtocol::LlamaCpp: return "llamacpp";
  }
  return "?";
}

double PplResult::perplexity() const { return std::exp(mean_nll); }

std::vector<EvalWindow> plan_windows(int64_t n, PplProtocol protocol, int seqlen, int64_t max_windows, int bos_id) {
  if (seqlen < 2) fail("seqlen {} is too short (at least 2)", seqlen);
  std::vector<EvalWindow> plan;
  switch (protocol) {
    case PplProtocol::Windows:
      for (int64_t s = 0; s + seqlen <= n; s += seqlen) plan.push_back({s, seqlen, 0, seqlen - 1, -1});
      break;
    case PplProtocol::Stream:
      // The last position of each chunk predicts the next chunk's first token: all n-1 are scored.
      for (int64_t s = 0; s + 1 < n; s += seqlen) {
        const int len = static_cast<int>(std::min<int64_t>(seqlen, n - 1 - s));
        plan.push_back({s, len, 0, len, -1});
      }
      break;
    case PplProtocol::LlamaCpp:
      for (int64_t s = 0; s + seqlen <= n; s += seqlen) plan.push_back({s, seqlen, seqlen / 2, seqlen - 1, bos_id});
      break;
  }
  if (max_windows > 0 && static_cast<int64_t>(plan.size()) > max_windows) plan.resize(static_cast<size_t>(max_windows));
  if (plan.empty())
    fail("{} tokens make no complete window of {} tokens (protocol {})", n, seqlen, protocol_name(protocol));
  return plan;
}

namespace {

// Per scored position: the NLL of the target, plus what the KL statistics need when a reference runs.
struct TokenStats {
  double nll = 0, ref_nll = 0, kl = 0, dp = 0;
  bool agree = false;
};

// log Σ exp(l) and argmax of one row of logits.
std::pair<double, int64_t> log_sum_exp(const float* l, int64_t n) {
  int64_t arg = 0;
  for (int64_t v = 1; v < n; ++v)
    if (l[v] > l[arg]) arg = v;
  const double mx = l[arg];
  double sum = 0.0;
  for (int64_t v = 0; v < n; ++v) sum += std::exp(static_cast<double>(l[v]) - mx);
  return {mx + std::log(sum), arg};
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

}  // namespace

PplResult evaluate_perplexity(const Model& model, std::span<const int> tokens, const PplOptions& options,
                              const Model* reference, KldResult* kld) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& cfg = model.config();
  const int seqlen = options.seqlen;
  if (seqlen > cfg.max_seq_len) fail("seqlen {} exceeds the model's context of {} tokens", seqlen, cfg.max_seq_len);
  if (reference != nullptr) {
    const ModelConfig& rc = reference->config();
    if (rc.vocab_size != cfg.vocab_size || rc.family != cfg.family || rc.dim != cfg.dim)
      fail("the reference model differs in architecture or vocabulary from the evaluated model");
    if (seqlen > rc.max_seq_len) fail("seqlen {} exceeds the reference model's context", seqlen);
  }
  const auto plan = plan_windows(static_cast<int64_t>(tokens.size()), options.protocol, seqlen, options.max_windows,
                                 options.bos.value_or(cfg.bos_id));
  PplResult result;
  result.protocol = options.protocol;
  result.seqlen = seqlen;
  result.windows = static_cast<int64_t>(plan.size());

  // Batches of equal-length windows, about 4096 positions per forward; logits in 256-row chunks so the
  // vocabulary-sized buffers stay small (nothing grows with vocabulary × tokens).
  const int per_batch = std::max(1, 4096 / seqlen);
  const int64_t dim = cfg.dim, vocab = cfg.vocab_size;
  constexpr int kChunk = 256;
  std::vector<float> logits(static_cast<size_t>(kChunk * vocab)), ref_logits;
  if (reference != nullptr) ref_logits.resize(logits.size());
  std::vector<TokenStats> stats;  // per scored token, reduced in order at the end: same for any thread count
  std::vector<float> hidden, ref_hidden;
  for (size_t w = 0; w < plan.size();) {
    size_t end = w + 1;
    while (end < plan.size() && end - w < static_cast<size_t>(per_batch) && plan[end].length == plan[w].length) ++end;
    const BatchShape shape{static_cast<int>(end - w), plan[w].length};
    std::vector<int> batch_tokens(static_cast<size_t>(shape.rows()));
    for (size_t i = w; i < end; ++i) {
      const auto& win = plan[i];
      std::copy_n(tokens.begin() + win.start, win.length, batch_tokens.begin() + static_cast<int64_t>(i - w) * win.length);
      if (win.bos >= 0) batch_tokens[(i - w) * static_cast<size_t>(win.length)] = win.bos;
    }
    hidden.resize(static_cast<size_t>(shape.rows() * dim));
    model.forward(batch_tokens, shape, hidden.data());
    if (reference != nullptr) {
      ref_hidden.resize(hidden.size());
      reference->forward(batch_tokens, shape, ref_hidden.data());
    }
    result.tokens_processed += shape.rows();

    for (size_t i = w; i < end; ++i) {
      const auto& win = plan[i];
      const int count = win.score_end - win.score_begin;
      const size_t base = stats.size();
      stats.resize(base + static_cast<size_t>(count));
      for (int c0 = 0; c0 < count; c0 += kChunk) {
        const int rows = std::min(kChunk, count - c0);
        const int64_t row0 = static_cast<int64_t>(i - w) * win.length + win.score_begin + c0;
        model.logits(hidden.data() + row0 * dim, rows, logits.data());
        if (reference != nullptr) reference->logits(ref_hidden.data() + row0 * dim, rows, ref_logits.data());
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; ++r) {
          const float* lq = logits.data() + static_cast<int64_t>(r) * vocab;
          const int target = tokens[static_cast<size_t>(win.start + win.score_begin + c0 + r + 1)];
          TokenStats& st = stats[base + static_cast<size_t>(c0 + r)];
          const auto [lse_q, arg_q] = log_sum_exp(lq, vocab);
          st.nll = lse_q - lq[target];
          if (reference == nullptr) continue;
          const float* lp = ref_logits.data() + static_cast<int64_t>(r) * vocab;
          const auto [lse_p, arg_p] = log_sum_exp(lp, vocab);
          st.ref_nll = lse_p - lp[target];
          double kl = 0.0;
          for (int64_t v = 0; v < vocab; ++v) {
            const double logp = lp[v] - lse_p, logq = lq[v] - lse_q;
            kl += std::exp(logp) * (logp - logq);
          }
          st.kl = std::max(kl, 0.0);
          st.dp = std::exp(-st.nll) - std::exp(-st.ref_nll);
          st.agree = arg_p == arg_q;
        }
      }
    }
    w = end;
    if (options.progress) options.progress(static_cast<int64_t>(w), result.windows);
  }
  auto summarise = [&](auto field, PplResult& r) {
    double sum = 0.0, sum_sq = 0.0;
    for (const auto& st : stats) {
      const double v = field(st);
      sum += v;
      sum_sq += v * v;
    }
    const double n = static_cast<double>(stats.size());
    r.protocol = result.protocol;
    r.seqlen = seqlen;
    r.windows = result.windows;
    r.predicted = static_cast<int64_t>(stats.size());
    r.mean_nll = sum / n;
    const double var = n > 1 ? std::max(0.0, (sum_sq - n * r.mean_nll * r.mean_nll) / (n - 1)) : 0.0;
    r.stderr_nll = std::sqrt(var / n);
    if (!std::isfinite(r.mean_nll)) {
      // Weights are not scanned at load (they stay mapped, unread): name the culprit now.
      const std::string bad = model.find_non_finite();
      if (!bad.empty()) fail("tensor '{}' holds a non-finite value (NaN or Inf): the model computes NaN", bad);
      fail("perplexity evaluation produced a non-finite NLL (the model overflows on this text)");
    }
  };
  summarise([](const TokenStats& st) { return st.nll; }, result);
  if (reference != nullptr && kld != nullptr) {
    summarise([](const TokenStats& st) { return st.ref_nll; }, kld->reference);
    std::vector<double> kl, dp;
    double agree = 0;
    for (const auto& st : stats) {
      kl.push_back(st.kl);
      dp.push_back(st.dp);
      agree += st.agree;
    }
    kld->kl_mean = mean_of(kl);
    double dp2 = 0;
    for (double v : dp) dp2 += v * v;
    kld->dp_mean = mean_of(dp);
    kld->dp_rms = std::sqrt(dp2 / static_cast<double>(dp.size()));
    kld->top1_agreement = agree / static_cast<double>(stats.size());
    std::sort(kl.begin(), kl.end());
    auto quantile = [&](double q) { return kl[static_cast<size_t>(q * static_cast<double>(kl.size() - 1) + 0.5)]; };
    kld->kl_median = quantile(0.5);
    kld->kl_p99 = quantile(0.99);
    kld->kl_max = kl.back();
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (kld != nullptr) kld->reference.seconds = result.seconds;
  return result;
}

}  // namespace baq
