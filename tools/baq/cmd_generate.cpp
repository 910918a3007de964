#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <span>

#include <fmt/format.h>

#include "baq/error.hpp"
#include "baq/memory.hpp"
#include "baq/model.hpp"
#include "baq/pack.hpp"
#include "baq/sampler.hpp"
#include "commands.hpp"
#include "progress.hpp"

namespace baq::cli {

namespace {
struct GenerateArgs {
  std::string model, tokenizer, prompt;
  int n = 64;
  float temp = 0.8f, top_p = 0.9f;
  uint64_t seed = 0;
  bool parse_special = true;
  int input_bits = 16;
};

void check_finite(const Model& model, const std::vector<float>& logits) {
  for (float v : logits)
    if (!std::isfinite(v)) {
      const std::string bad = model.find_non_finite();
      if (!bad.empty()) fail("tensor '{}' holds a non-finite value (NaN or Inf): the model computes NaN", bad);
      fail("the model computed a non-finite logit (it overflows on this prompt)");
    }
}
}  // namespace

Command add_generate_command(CLI::App& app) {
  auto* sub = app.add_subcommand("generate", "Generate text from a prompt (any model baq reads, .baq files packed)");
  auto a = std::make_shared<GenerateArgs>();
  sub->add_option("MODEL", a->model, kModelArgumentHelp)->required();
  sub->add_option("--prompt", a->prompt, "Prompt text")->required();
  sub->add_option("--tokenizer", a->tokenizer, "Tokenizer file when the model does not carry one");
  sub->add_option("-n", a->n, "Tokens to generate")->check(IntRange(1, 1 << 24))->capture_default_str();
  sub->add_option("--temp", a->temp, "Temperature (0 = greedy)")->check(NumberRange(0.0, 10.0))->capture_default_str();
  sub->add_option("--top-p", a->top_p, "Nucleus sampling mass")->check(NumberRange(0.0, 1.0))->capture_default_str();
  sub->add_option("--seed", a->seed, "Sampling seed")->capture_default_str();
  sub->add_flag("--parse-special,!--no-parse-special", a->parse_special,
                "Match special-token spellings (<|eot_id|>, [INST]) in the prompt as their tokens (default: on)");
  add_input_bits_option(sub, a->input_bits);
  return {sub, [a] {
            const auto t0 = std::chrono::steady_clock::now();
            set_fused_input_bits(a->input_bits);
            set_radix_twins(true);  // every token runs the fused product
            LoadedModel m = load_model(a->model, a->tokenizer);
            const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const MemoryEstimate memory = estimate_generate_memory(*m.model);
            check_memory(memory, "generation", "use a smaller model or a .baq of it");
            std::vector<int> ids = m.tokenizer->encode(a->prompt, /*add_special=*/true, a->parse_special);
            const size_t prompt_len = ids.size();
            const ModelConfig& c = m.config;
            std::mt19937_64 rng(a->seed);
            std::vector<float> hidden, logits(static_cast<size_t>(c.vocab_size));
            const bool has_bos = m.tokenizer->adds_bos() && !ids.empty() && ids.front() == m.tokenizer->bos_id();
            // Text of ids[from..to) as the tokenizer spells a sequence (SentencePiece drops the leading
            // space of a sequence's first piece; a BOS is not text).
            auto text_of = [&](size_t from, size_t to) {
              return m.tokenizer->decode(std::vector<int>(ids.begin() + static_cast<std::ptrdiff_t>(from),
                                                          ids.begin() + static_cast<std::ptrdiff_t>(to)));
            };
            // Keys and values stay in a cache, so each new token runs one row through the model in one
            // parallel region. When the context fills, the cache restarts from the last half-context.
            KvCache cache;
            auto prefill = [&](size_t keep) {
              cache = KvCache{};
              keep = std::min(keep, ids.size());
              const std::span<const int> tokens = std::span<const int>(ids).subspan(ids.size() - keep);
              const int T = static_cast<int>(tokens.size());
              hidden.resize(static_cast<size_t>(T) * c.dim);
              m.model->forward(tokens, BatchShape{1, T}, hidden.data(), nullptr, &cache);
              m.model->logits(hidden.data() + static_cast<size_t>(T - 1) * c.dim, 1, logits.data());
              check_finite(*m.model, logits);
            };
            const auto t1 = std::chrono::steady_clock::now();
            prefill(static_cast<size_t>(c.max_seq_len));
            // After the prompt ran, so a broken model fails before any output.
            std::string shown = text_of(has_bos ? 1 : 0, ids.size());
            if (shown.starts_with(' ')) shown.erase(0, 1);
            fmt::print("{}", shown);
            std::fflush(stdout);
            const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
            const auto t2 = std::chrono::steady_clock::now();
            int generated = 0;
            // Any end-of-sequence id of the model's config, generation_config.json or tokenizer files.
            std::vector<int> eos = c.eos_ids;
            for (int e : m.tokenizer->eos_ids())
              if (std::find(eos.begin(), eos.end(), e) == eos.end()) eos.push_back(e);
            while (generated < a->n) {
              const int next = sample_token(logits.data(), c.vocab_size, a->temp, a->top_p, rng);
              if (std::find(eos.begin(), eos.end(), next) != eos.end()) break;
              ids.push_back(next);
              ++generated;
              // Only the new text: the last few tokens decoded with and without the new one (a piece's
              // text can depend on its neighbours), so each step costs the same however long the output.
              const size_t from = std::max<size_t>(has_bos ? 1 : 0, ids.size() >= 9 ? ids.size() - 9 : 0);
              const std::string with = text_of(from, ids.size()), without = text_of(from, ids.size() - 1);
              if (with.size() >= without.size() && with.compare(0, without.size(), without) == 0)
                fmt::print("{}", with.substr(without.size()));
              std::fflush(stdout);
              if (generated == a->n) break;
              if (cache.length >= c.max_seq_len) {
                prefill(static_cast<size_t>(std::max(1, c.max_seq_len / 2)));
              } else {
                m.model->next_logits(next, cache, logits.data());
                check_finite(*m.model, logits);
              }
            }
            const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t2).count();
            fmt::print("\n");
            std::fflush(stdout);  // the text's last line ends before the statistics (stderr) start
            fmt::print(stderr,
                       "prompt {} tokens in {:.3f} s, generated {} tokens in {:.2f} s ({:.1f} tokens/s), load {:.3f} s, "
                       "peak memory {:.1f} MiB\n",
                       prompt_len, prefill_s, generated, gen_s, generated / std::max(gen_s, 1e-9), load_s, peak_rss_mib());
          }};
}

}  // namespace baq::cli
