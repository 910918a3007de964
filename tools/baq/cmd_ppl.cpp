#include <omp.h>

#include <cmath>

#include <fmt/format.h>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/memory.hpp"
#include "baq/model.hpp"
#include "baq/pack.hpp"
#include "baq/perplexity.hpp"
#include "commands.hpp"
#include "progress.hpp"

namespace baq::cli {

namespace {
struct PplArgs {
  std::string model, tokenizer, text, reference, protocol = "windows";
  int seqlen = 0;
  int64_t max_windows = 0;
  bool parse_special = false;
  int input_bits = 16;
};
}  // namespace

Command add_ppl_command(CLI::App& app) {
  auto* sub = app.add_subcommand("ppl", "Measure perplexity on a text under a named protocol");
  auto a = std::make_shared<PplArgs>();
  sub->add_option("MODEL", a->model, kModelArgumentHelp)->required();
  sub->add_option("--text", a->text, "Evaluation text (plain text, or .jsonl with a \"text\" field per line)")
      ->required();
  sub->add_option("--tokenizer", a->tokenizer, "Tokenizer file when the model does not carry one");
  sub->add_option("--seqlen", a->seqlen, "Window length in tokens (default: the model's context, capped at 2048)")
      ->check(IntRange(2, 1 << 20));
  sub->add_option("--max-windows", a->max_windows, "Evaluate only the first K windows (default: all)")
      ->check(IntRange(0, int64_t{1} << 40));
  sub->add_option("--protocol", a->protocol,
                  "windows (GPTQ papers), stream (llama2.c) or llamacpp (llama-perplexity)")
      ->check(CLI::IsMember({"windows", "stream", "llamacpp"}));
  sub->add_flag("--parse-special,!--no-parse-special", a->parse_special,
                "Match special-token spellings (<s>, <|endoftext|>) in the text as their tokens (default: plain text)");
  sub->add_option("--reference", a->reference,
                  "Full-precision model to compare against over the same windows: KL divergence, Δp, top-1 agreement");
  add_input_bits_option(sub, a->input_bits);
  return {sub, [a] {
            set_fused_input_bits(a->input_bits);
            set_radix_twins(every_batch_fused());  // the twins serve the fused product only
            LoadedModel m = load_model(a->model, a->tokenizer);
            const std::string text = read_text_file(a->text);
            // Special-token spellings in evaluation text are text (llama-perplexity's default).
            const std::vector<int> tokens = m.tokenizer->encode(text, /*add_special=*/true, a->parse_special);
            PplOptions options;
            options.bos = m.tokenizer->adds_bos() ? m.tokenizer->bos_id() : -1;
            options.protocol = parse_protocol(a->protocol);
            options.seqlen = a->seqlen > 0 ? a->seqlen : std::min(m.config.max_seq_len, 2048);
            options.max_windows = a->max_windows;
            ProgressBar bar("ppl", "windows");
            options.progress = [&bar](int64_t done, int64_t total) { bar.update(done, total); };
            std::unique_ptr<LoadedModel> ref;
            if (!a->reference.empty())
              ref = std::make_unique<LoadedModel>(load_model(a->reference, "", /*need_tokenizer=*/false));
            if (options.seqlen > m.config.max_seq_len)
              fail("seqlen {} exceeds the model's context of {} tokens", options.seqlen, m.config.max_seq_len);
            const MemoryEstimate memory = estimate_eval_memory(*m.model, ref ? ref->model.get() : nullptr, options.seqlen,
                                                               omp_get_max_threads());
            fmt::print("memory: estimated peak {}\n", memory.describe());
            check_memory(memory, "perplexity", "lower --seqlen");
            KldResult kld;
            const PplResult r = evaluate_perplexity(*m.model, tokens, options, ref ? ref->model.get() : nullptr, &kld);
            bar.finish();
            fmt::print("protocol {}  seqlen {}  windows {}  text tokens {}  predicted tokens {}\n",
                       protocol_name(r.protocol), r.seqlen, r.windows, tokens.size(), r.predicted);
            fmt::print("mean nll {:.6f}  stderr {:.6f}\n", r.mean_nll, r.stderr_nll);
            fmt::print("ppl {:.6f}  (95% interval {:.4f} .. {:.4f})\n", r.perplexity(),
                       std::exp(r.mean_nll - 1.96 * r.stderr_nll), std::exp(r.mean_nll + 1.96 * r.stderr_nll));
            if (ref) {
              fmt::print("reference ppl {:.6f}  (mean nll {:.6f})\n", kld.reference.perplexity(), kld.reference.mean_nll);
              fmt::print("kld mean {:.6f}  median {:.6f}  p99 {:.6f}  max {:.6f}\n", kld.kl_mean, kld.kl_median,
                         kld.kl_p99, kld.kl_max);
              fmt::print("delta-p mean {:+.6f}  rms {:.6f}\n", kld.dp_mean, kld.dp_rms);
              fmt::print("top-1 agreement {:.3f}%\n", 100.0 * kld.top1_agreement);
            }
            fmt::print("speed {:.0f} tokens/s  ({:.2f} s)  peak memory {:.1f} MiB\n",
                       static_cast<double>(r.tokens_processed) / r.seconds, r.seconds, peak_rss_mib());
          }};
}

}  // namespace baq::cli
