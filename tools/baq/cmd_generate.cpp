#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <span>

#include <fmt/format.h>

#include "baq/error.hpp"
#include "baq/model.hpp"
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
};
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
  return {sub, [a] {
            const auto t0 = std::chrono::steady_clock::now();
            LoadedModel m = load_model(a->model, a->tokenizer);
            const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::vector<int> ids = m.tokenizer->encode(a->prompt, /*add_bos=*/true);
            const size_t prompt_len = ids.size();
            const ModelConfig& c = m.config;
            std::mt19937_64 rng(a->seed);
            std::vector<float> hidden, logits(static_cast<size_t>(c.vocab_size));
            // Text after BOS, without the one leading space SentencePiece-style vocabularies prefix.
            auto text_of = [&](const std::vector<int>& all) {
              std::string t = m.tokenizer->decode(std::vector<int>(all.begin() + 1, all.end()));
              return t.starts_with(' ') ? t.substr(1) : t;
            };
            std::string printed = text_of(ids);
            const auto t1 = std::chrono::steady_clock::now();
            // Keys and values stay in a cache, so each new token runs one row through the model. When
            // the context fills, the cache restarts from the last half-context of tokens.
            KvCache cache;
            auto run = [&](std::span<const int> tokens) {
              const int T = static_cast<int>(tokens.size());
              hidden.resize(static_cast<size_t>(T) * c.dim);
              m.model->forward(tokens, BatchShape{1, T}, hidden.data(), nullptr, &cache);
              m.model->logits(hidden.data() + static_cast<size_t>(T - 1) * c.dim, 1, logits.data());
              for (float v : logits)
                if (!std::isfinite(v)) {
                  const std::string bad = m.model->find_non_finite();
                  if (!bad.empty()) fail("tensor '{}' holds a non-finite value (NaN or Inf): the model computes NaN", bad);
                  fail("the model computed a non-finite logit (it overflows on this prompt)");
                }
            };
            auto restart_from_last = [&](size_t keep) {
              cache = KvCache{};
              keep = std::min(keep, ids.size());
              run(std::span<const int>(ids).subspan(ids.size() - keep));
            };
            restart_from_last(static_cast<size_t>(c.max_seq_len));
            fmt::print("{}", printed);  // after the prompt ran: a broken model fails before any output
            std::fflush(stdout);
            int generated = 0;
            while (generated < a->n) {
              const int next = sample_token(logits.data(), c.vocab_size, a->temp, a->top_p, rng);
              if (next == m.tokenizer->eos_id()) break;
              ids.push_back(next);
              ++generated;
              const std::string text = text_of(ids);
              if (text.size() >= printed.size() && text.compare(0, printed.size(), printed) == 0) {
                fmt::print("{}", text.substr(printed.size()));
                printed = text;
              }
              std::fflush(stdout);
              if (generated == a->n) break;
              if (cache.length >= c.max_seq_len)
                restart_from_last(static_cast<size_t>(std::max(1, c.max_seq_len / 2)));
              else
                run(std::span<const int>(&ids.back(), 1));
            }
            const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
            fmt::print("\n");
            fmt::print(stderr, "prompt {} tokens, generated {} tokens in {:.2f} s ({:.1f} tokens/s), load {:.3f} s, peak memory {:.1f} MiB\n",
                       prompt_len, generated, gen_s, generated / std::max(gen_s, 1e-9), load_s, peak_rss_mib());
          }};
}

}  // namespace baq::cli
