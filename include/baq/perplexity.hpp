#pragma once
// Perplexity under a named protocol (see ../shared/README.md):
//   windows  — GPTQ papers: non-overlapping seqlen windows, incomplete tail dropped, every position
//              but the first of each window scored;
//   stream   — llama2.c: every token after the first scored, context restarting every seqlen tokens,
//              tail kept;
//   llamacpp — llama-perplexity: non-overlapping n_ctx chunks, each starting with BOS, only the
//              second half of each chunk scored.
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "baq/model.hpp"

namespace baq {

enum class PplProtocol { Windows, Stream, LlamaCpp };
PplProtocol parse_protocol(const std::string& name);
const char* protocol_name(PplProtocol protocol);

// One forward window: tokens [start, start+length) of the text (the first replaced by `bos` when
// bos >= 0); position p in [score_begin, score_end) predicts token start+p+1.
struct EvalWindow {
  int64_t start = 0;
  int length = 0;
  int score_begin = 0;
  int score_end = 0;
  int bos = -1;
};

std::vector<EvalWindow> plan_windows(int64_t n_tokens, PplProtocol protocol, int seqlen, int64_t max_windows, int bos_id);

struct PplOptions {
  PplProtocol protocol = PplProtocol::Windows;
  int seqlen = 2048;
  int64_t max_windows = 0;  // 0 = all
  // The BOS the llamacpp protocol writes at each window's start, as llama-perplexity does when the
  // vocabulary adds one (the tokenizer's; -1: none, the text's own token stays). Unset: the model's.
  std::optional<int> bos;
  std::function<void(int64_t done, int64_t total)> progress;
};

struct PplResult {
  PplProtocol protocol = PplProtocol::Windows;
  int seqlen = 0;
  int64_t windows = 0;
  int64_t predicted = 0;
  double mean_nll = 0.0;
  double stderr_nll = 0.0;  // standard error of the mean NLL
  double seconds = 0.0;
  int64_t tokens_processed = 0;  // forward positions, for tokens/s
  double perplexity() const;
};

// Quantized vs full-precision over the same windows (all per scored token; KL(FP‖QUANT) in nats).
struct KldResult {
  PplResult reference;  // the full-precision model's perplexity on the same windows
  double kl_mean = 0, kl_median = 0, kl_p99 = 0, kl_max = 0;
  double dp_mean = 0, dp_rms = 0;  // Δp = p_quant(correct) − p_fp(correct)
  double top1_agreement = 0;       // fraction of positions whose argmax agrees
};

PplResult evaluate_perplexity(const Model& model, std::span<const int> tokens, const PplOptions& options,
                              const Model* reference = nullptr, KldResult* kld = nullptr);

}  // namespace baq
