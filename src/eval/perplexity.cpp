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
      if (bos_id < 0) fail("the llamacpp protocol needs a tokenizer with a BOS token");
      for (int64_t s = 0; s + seqlen <= n; s += seqlen) plan.push_back({s, seqlen, seqlen / 2, seqlen - 1, bos_id});
      break;
  }
  if (max_windows > 0 && static_cast<int64_t>(plan.size()) > max_windows) plan.resize(static_cast<size_t>(max_windows));
  if (plan.empty())
    fail("{} tokens make no complete window of {} tokens (protocol {})", n, seqlen, protocol_name(protocol));
  return plan;
}

PplResult evaluate_perplexity(const Model& model, std::span<const int> tokens, const PplOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& cfg = model.config();
  const int seqlen = options.seqlen;
  if (seqlen > cfg.max_seq_len) fail("seqlen {} exceeds the model's context of {} tokens", seqlen, cfg.max_seq_len);
  const auto plan = plan_windows(static_cast<int64_t>(tokens.size()), options.protocol, seqlen, options.max_windows,
                                 cfg.bos_id);
  PplResult result;
  result.protocol = options.protocol;
  result.seqlen = seqlen;
  result.windows = static_cast<int64_t>(plan.size());

  // Batches of equal-length windows, about 4096 positions per forward; logits in 256-row chunks so the
  // vocabulary-sized buffer stays small.
  const int per_batch = std::max(1, 4096 / seqlen);
  const int64_t dim = cfg.dim, vocab = cfg.vocab_size;
  constexpr int kChunk = 256;
  std::vector<float> logits(static_cast<size_t>(kChunk * vocab));
  std::vector<double> nll;  // per scored token, summed in order at the end: same result for any thread count
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
    std::vector<float> hidden(static_cast<size_t>(shape.rows() * dim));
    model.forward(batch_tokens, shape, hidden.data());
    result.tokens_processed += shape.rows();

    for (size_t i = w; i < end; ++i) {
      const auto& win = plan[i];
      const int count = win.score_end - win.score_begin;
      const size_t base = nll.size();
      nll.resize(base + static_cast<size_t>(count));
      for (int c0 = 0; c0 < count; c0 += kChunk) {
        const int rows = std::min(kChunk, count - c0);
        const int64_t row0 = static_cast<int64_t>(i - w) * win.length + win.score_begin + c0;
        model.logits(hidden.data() + row0 * dim, rows, logits.data());
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; ++r) {
          const float* lr = logits.data() + static_cast<int64_t>(r) * vocab;
          const int target = tokens[static_cast<size_t>(win.start + win.score_begin + c0 + r + 1)];
          float mx = lr[0];
          for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, lr[v]);
          double sum = 0.0;
          for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(lr[v] - mx));
          nll[base + static_cast<size_t>(c0 + r)] = std::log(sum) + mx - lr[target];
        }
      }
    }
    w = end;
    if (options.progress) options.progress(static_cast<int64_t>(w), result.windows);
  }
  double sum = 0.0, sum_sq = 0.0;
  for (double v : nll) {
    sum += v;
    sum_sq += v * v;
  }
  const double n = static_cast<double>(nll.size());
  result.predicted = static_cast<int64_t>(nll.size());
  result.mean_nll = sum / n;
  const double var = n > 1 ? std::max(0.0, (sum_sq - n * result.mean_nll * result.mean_nll) / (n - 1)) : 0.0;
  result.stderr_nll = std::sqrt(var / n);
  if (!std::isfinite(result.mean_nll)) fail("perplexity evaluation produced a non-finite NLL");
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace baq
