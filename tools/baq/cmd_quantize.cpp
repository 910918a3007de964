#include <omp.h>

#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/memory.hpp"
#include "baq/output.hpp"
#include "baq/perplexity.hpp"
#include "baq/ranks.hpp"
#include "baq/report.hpp"
#include "commands.hpp"
#include "progress.hpp"

namespace baq::cli {

namespace {
// Defaults for the matrices outside the blocks, chosen by measurement (README, "Whole-model
// quantization"): the head's error reaches the logits directly, the embedding's is one row per token.
// Measured on kdoc-6.8M at llama.cpp's Q2_K/Q3_K_S/Q4_K_M file sizes (README, "Whole-model
// quantization"): a 5.5-bit head leaves more bytes to the blocks than 6.5 for less damage; the
// embedding wants 4.5 bits under 4-bit blocks and 5.5 at or above.
constexpr double kDefaultHeadBpw = 5.5, kEmbedBpwBelow4 = 4.5, kEmbedBpwFrom4 = 5.5;

struct QuantizeArgs {
  std::string model, tokenizer, out, method = "gptq";
  std::string calib = "../shared/data/c4/c4-sample-200.jsonl";
  int nsamples = 128, seqlen = 2048;
  uint64_t seed = 0;
  double bits = 4;
  double bpw = 0, head_bpw = kDefaultHeadBpw, embed_bpw = kEmbedBpwBelow4;
  std::string ranges = "f16";
  bool baq_fallback = true;
  std::string eval;
  int64_t eval_max_windows = 0;
  std::string alloc = "layer";
  int sensitivity_tokens = 512;
  bool smooth_outliers = true;
  bool bf16_activations = false;
  QuantSettings settings;
};
}  // namespace

Command add_quantize_command(CLI::App& app) {
  auto* sub = app.add_subcommand("quantize", "Quantize every linear layer of the transformer blocks (RTN, GPTQ or BAQ)");
  auto a = std::make_shared<QuantizeArgs>();
  a->settings.clip_search = true;  // measured: kdoc-6.8M GPTQ at 3.3 stored bpw, KLD 0.0038 -> 0.0035
  sub->add_option("MODEL", a->model, kModelArgumentHelp)->required();
  sub->add_option("--out", a->out,
                  "Output: a .baq file (packed, with the tokenizer and report summary inside; report.json beside it), "
                  "or a folder with config.json, model.safetensors (dequantized), tokenizer and report.json")
      ->required();
  sub->add_option("--tokenizer", a->tokenizer, "Tokenizer file when the model does not carry one");
  sub->add_option("--method", a->method, "rtn, gptq or baq (GPTQ with closed-form per-column bit allocation)")
      ->check(CLI::IsMember({"rtn", "gptq", "baq"}))->capture_default_str();
  sub->add_option("--bits", a->bits,
                  "Code bits per weight: an integer 2..8 for rtn/gptq; for baq the mean over columns, fractional "
                  "allowed (e.g. 2.5), met to within 1/columns")
      ->check(NumberRange(0.25, 8.0))->capture_default_str();
  sub->add_option("--bpw", a->bpw,
                  "Budget in stored bits per weight of the block linears (codes with their packing, ranges, level "
                  "counts: everything), met from below; rtn/gptq pick bits and grid groups per layer to fit, baq "
                  "allocates to it. Overrides --bits and --group-size")
      ->check(NumberRange(0.0, 16.0));
  sub->add_option("--head-bpw", a->head_bpw,
                  "Stored bits per weight of the output head (GPTQ on the final-norm activations; a tied embedding "
                  "follows it); 0 keeps it as stored")
      ->check(NumberRange(0.0, 16.0))->capture_default_str();
  sub->add_option("--embed-bpw", a->embed_bpw,
                  "Stored bits per weight of an untied token embedding (rounded per row); 0 keeps it as stored. "
                  "Default: 4.5 when the blocks get under 4 bits (--bpw, else --bits), 5.5 from 4")
      ->check(NumberRange(0.0, 16.0));
  sub->add_option("--ranges", a->ranges,
                  "How each grid's range is stored: f16 (two F16 per row or group) or scaled8 (8-bit fractions of a "
                  "superblock's F16 range, as k-quants store scales)")
      ->check(CLI::IsMember({"f16", "scaled8"}))->capture_default_str();
  sub->add_option("--baq-shrink", a->settings.baq_shrink,
                  "baq: shrink column coefficients toward the layer's geometric mean (0 = as measured, 1 = uniform): "
                  "robustness to text unlike the calibration")
      ->check(NumberRange(0.0, 1.0))->capture_default_str();
  sub->add_flag("!--baq-order-coefficients", a->settings.baq_order_invariant,
                "baq: measure column coefficients in GPTQ's visiting order (the paper's ℓ_j·L²) instead of the "
                "order-invariant Σ(w−q)²/[H⁻¹]_jj");
  sub->add_flag("!--no-baq-fallback", a->baq_fallback,
                "baq with --bpw: always use the allocation, even in layers where uniform GPTQ at the same stored bits "
                "has the lower calibration loss");
  sub->add_flag("!--no-smooth", a->smooth_outliers,
                "Keep every norm and weight as stored (default: where the calibration proxy loss prefers it, divide a "
                "norm's output channels and multiply the weight columns reading them, evening out activation outliers)");
  sub->add_option("--alloc", a->alloc, "baq: budget per layer, or pooled over the whole model (sensitive layers get more; kept only when the "
                  "model's output KL divergence on calibration tokens is 10 % below per layer's, else per layer)")
      ->check(CLI::IsMember({"layer", "model"}))->capture_default_str();
  sub->add_option("--sensitivity-tokens", a->sensitivity_tokens,
                  "baq --alloc model: calibration tokens each layer's sensitivity (output KL divergence per unit of its "
                  "loss) is measured on; one forward of the later blocks per linear")
      ->check(IntRange(2, 1 << 20))->capture_default_str();
  sub->add_option("--group-size", a->settings.group_size,
                  "Input columns per scale/zero group (0 = one grid per output row; a last partial group gets its own)")
      ->check(IntRange(0, 1 << 20))->capture_default_str();
  sub->add_flag("--sym", a->settings.sym, "Symmetric grid (no zero point stored)");
  sub->add_option("--damp", a->settings.damp, "GPTQ damping, fraction of mean(diag H)")->check(NumberRange(0.0, 10.0))->capture_default_str();
  sub->add_option("--block-size", a->settings.block_size, "GPTQ lazy-batch width")->check(IntRange(1, 1 << 20))->capture_default_str();
  sub->add_flag("--act-order", a->settings.act_order, "GPTQ: quantize columns by decreasing Hessian diagonal");
  sub->add_flag("--clip-search,!--no-clip-search", a->settings.clip_search,
                "GPTQ/BAQ: choose each grid's range among shrunk min-max ranges by the rounding error of its weights "
                "(default on)");
  sub->add_option("--calib", a->calib, "Calibration text (plain text or .jsonl)")->capture_default_str();
  sub->add_option("--nsamples", a->nsamples, "Calibration windows")->check(IntRange(1, 1 << 20))->capture_default_str();
  sub->add_option("--seqlen", a->seqlen, "Calibration window length (capped at the model's context)")
      ->check(IntRange(2, 1 << 20))->capture_default_str();
  sub->add_option("--seed", a->seed, "Seed of the calibration window sampler")->capture_default_str();
  sub->add_flag("--bf16-activations", a->bf16_activations,
                "Hold the calibration activations between blocks in BF16: half the memory (128 × 2048 tokens of an "
                "8B model: 4 GiB instead of 8), results rounded accordingly");
  sub->add_option("--eval", a->eval,
                  "After quantizing, measure perplexity (windows protocol, the model's context capped at 2048) and "
                  "KLD against the original model on this text; recorded in report.json");
  sub->add_option("--eval-max-windows", a->eval_max_windows, "Evaluate only the first K windows")
      ->check(IntRange(0, int64_t{1} << 40));
  return {sub, [a, sub] {
            auto sub_count = [sub](const char* flag) { return sub->count(flag); };
            // Under mpirun every rank runs this; rank 0 alone checks and writes outputs and prints.
            const Ranks& ranks = Ranks::world();
            const bool root = ranks.is_root();
            // Outputs are checked before any work: a run that would overwrite an input or a folder baq
            // did not write is refused now, not after quantizing.
            InputSet inputs;
            for (const std::string* p : {&a->model, &a->tokenizer, &a->calib, &a->eval})
              if (!p->empty()) inputs.add(*p);
            if (std::filesystem::is_regular_file(a->model))
              inputs.add(std::filesystem::path(a->model).parent_path().empty() ? "." : std::filesystem::path(a->model).parent_path().string());
            const bool to_baq = a->out.ends_with(".baq");
            const std::string report_path = to_baq ? a->out.substr(0, a->out.size() - 4) + ".report.json" : "";
            if (root && to_baq) {
              check_output_file(a->out, inputs);
              check_output_file(report_path, inputs);
            } else if (root) {
              OutputFolder::check(a->out, inputs);
            }
            LoadedModel m = load_model(a->model, a->tokenizer);
            if (!std::filesystem::exists(a->calib))
              fail("{}: calibration text not found; pass --calib FILE", a->calib);
            const std::string text = read_text_file(a->calib);
            // Calibration text is text: special-token spellings in it are not parsed.
            const std::vector<int> tokens = m.tokenizer->encode(text, /*add_special=*/true);
            int seqlen = a->seqlen;
            if (seqlen > m.config.max_seq_len) {
              if (root) fmt::print(stderr, "note: --seqlen {} exceeds the model's context; using {}\n", seqlen, m.config.max_seq_len);
              seqlen = m.config.max_seq_len;
            }
            const std::vector<int> calib = sample_calibration_windows(tokens, a->nsamples, seqlen, a->seed);
            if (sub_count("--embed-bpw") == 0) a->embed_bpw = (a->bpw > 0 ? a->bpw : a->bits) < 4 ? kEmbedBpwBelow4 : kEmbedBpwFrom4;
            if (ranks.distributed()) {
              // Ranks must quantize the same model with the same data and settings (paths may differ
              // between hosts; contents may not).
              InputFingerprint fp;
              fp.add_path("the model", a->model);
              if (!a->tokenizer.empty()) fp.add_path("the tokenizer", a->tokenizer);
              fp.add_bytes("the calibration windows", calib.data(), calib.size() * sizeof(int), a->calib);
              const QuantSettings& q = a->settings;
              const std::string settings = fmt::format(
                  "{} {} {} {} {} {} {} {} {} {} {} {} {} {} | {} {} {} {} {} {} {} {} {} {}", a->method, a->bits, a->bpw,
                  a->head_bpw, a->embed_bpw, a->ranges, a->baq_fallback, a->alloc, a->sensitivity_tokens, a->smooth_outliers,
                  a->bf16_activations,
                  a->nsamples, seqlen, a->seed, q.group_size, q.super_groups, q.sym, q.damp, q.block_size, q.act_order, q.clip_search,
                  q.baq_order_invariant, q.baq_shrink, q.max_damp_retries);
              fp.add_bytes("the quantization settings", settings.data(), settings.size());
              check_same_inputs(ranks, fp);
            }

            QuantizeOptions options;
            options.method = parse_method(a->method);
            options.settings = a->settings;
            options.settings.ranges = parse_range_kind(a->ranges);
            options.bpw = a->bpw;
            options.baq_fallback = a->baq_fallback;
            // Outside the blocks: each at its own stored rate (a tied embedding is the head). A default
            // rate too low for a very narrow model keeps the matrix as stored; one asked for is an error.
            auto outer_settings = [&](double bpw, const char* flag) -> std::optional<QuantSettings> {
              if (bpw <= 0) return std::nullopt;
              try {
                return uniform_settings_for_bpw(bpw, m.config.vocab_size, m.config.embed_dim, options.settings);
              } catch (const Error& e) {
                if (sub_count(flag) > 0) fail("{}: {}", flag, e.what());
                fmt::print(stderr, "note: {} {} does not fit this model ({}); kept as stored\n", flag, bpw, e.what());
                return std::nullopt;
              }
            };
            options.head = outer_settings(a->head_bpw, "--head-bpw");
            if (!m.config.tied_embeddings) options.embeddings = outer_settings(a->embed_bpw, "--embed-bpw");
            options.bf16_activations = a->bf16_activations;
            // Known before anything large is allocated: the peak, and whether the machine holds it.
            // Each rank holds its share of the windows (the largest is checked; too few windows for the
            // ranks fail here, before anything is printed).
            int64_t rank_windows = 0;
            for (int r = 0; r < ranks.size(); ++r)
              rank_windows = std::max(rank_windows, window_share(a->nsamples, options.batch_windows, r, ranks.size()).count);
            MemoryEstimate memory = estimate_quantize_memory(*m.model, rank_windows, seqlen, options.batch_windows,
                                                             a->bf16_activations, omp_get_max_threads());
            if (options.head || options.embeddings) {
              // Held through the run: the packed outer matrices; at the head's solve, one slice of rows
              // (≤ 128 MiB of F32) with its dequantized copy and codes, and its Hessian.
              const double cells = static_cast<double>(m.config.vocab_size) * static_cast<double>(m.config.embed_dim);
              const double slice = std::min(cells, 32.0 * 1024 * 1024) * 9.0;
              const double packed = cells * ((options.head ? a->head_bpw : 0) + (options.embeddings ? a->embed_bpw : 0)) / 8;
              const double hessian = 8.0 * static_cast<double>(m.config.embed_dim) * static_cast<double>(m.config.embed_dim) * 3;
              memory.allocated.emplace_back("head and embedding", packed + slice + hessian);
            }
            const double windows = static_cast<double>(a->nsamples) * seqlen;
            const double checked = std::min<double>(model_wide_check_tokens(a->sensitivity_tokens, m.config.vocab_size), windows);
            if (options.method == QuantMethod::Baq && parse_allocation(a->alloc) == Allocation::Model) {
              // Held through the run: the original's log-probabilities on the sensitivity tokens and on
              // the check's, and one more set for the model checked; during the sensitivities, the
              // residual stream at every block's input and every linear packed at the uniform rate.
              const double tokens = std::min<double>(a->sensitivity_tokens, windows);
              double weights = 0;
              for (int b = 0; b < m.model->n_blocks(); ++b)
                for (Linear* l : m.model->block(b).linears()) weights += static_cast<double>(l->out_features() * l->in_features());
              memory.allocated.emplace_back("model-wide allocation",
                                            4.0 * (tokens + 2 * checked) * m.config.vocab_size +
                                                4.0 * tokens * m.config.dim * (m.model->n_blocks() + 1) +
                                                weights * std::max(a->bpw, a->bits) / 8);
            } else if (options.method == QuantMethod::Baq && a->bpw > 0) {
              // The check against uniform GPTQ: the original's log-probabilities and the candidate's.
              memory.allocated.emplace_back("allocation check", 8.0 * checked * m.config.vocab_size);
            }
            if (root)
              fmt::print("memory: estimated peak {}{}\n", memory.describe(),
                         ranks.distributed() ? fmt::format(" per rank ({} ranks, ≤ {} windows each)", ranks.size(), rank_windows) : "");
            check_memory(memory, "quantization",
                         a->bf16_activations ? "lower --nsamples or --seqlen"
                                             : "lower --nsamples or --seqlen, or pass --bf16-activations");
            for (const auto& [what, bytes] : memory.allocated)
              if (what == "forward buffers" && bytes > 256.0 * 1024 * 1024) options.release_scratch = true;
            options.sensitivity_tokens = a->sensitivity_tokens;
            options.smooth_outliers = a->smooth_outliers;
            if (a->bpw > 0) {
              if (options.method == QuantMethod::Baq) options.allocation = parse_allocation(a->alloc);
            } else if (options.method == QuantMethod::Baq) {
              options.rate = a->bits;
              options.allocation = parse_allocation(a->alloc);
            } else {
              if (a->bits != std::floor(a->bits) || a->bits < 2)
                fail("--bits {} must be an integer 2..8 for --method {} (fractional budgets need --method baq)", a->bits,
                     a->method);
              options.settings.bits = static_cast<int>(a->bits);
            }
            ProgressBar bar("quantize", "layers");
            if (root) {
              options.on_layer = [&bar](const LayerRecord&, int done, int total) { bar.update(done, total); };
              options.warn = [&bar](const std::string& msg) {
                bar.finish();
                fmt::print(stderr, "warning: {}\n", msg);
              };
            }
            auto outer = [](const std::optional<QuantSettings>& q) {
              return q ? fmt::format("{} bits{}", q->bits, q->group_size > 0 ? fmt::format(" in groups of {} ({})", q->group_size, range_kind_name(q->ranges)) : "")
                       : std::string("kept as stored");
            };
            if (root) {
              fmt::print("quantizing {} with {} at {}{}{} on {} windows of {} tokens from {}; head {}, embedding {}\n", a->model,
                         a->method, a->bpw > 0 ? fmt::format("{} stored bits per weight", a->bpw) : fmt::format("{} bits", a->bits),
                         options.method == QuantMethod::Baq ? fmt::format(" ({} allocation)", a->alloc) : "",
                         a->bpw <= 0 && a->settings.group_size > 0 ? fmt::format(", groups of {}", a->settings.group_size) : "",
                         a->nsamples, seqlen, a->calib, outer(options.head),
                         m.config.tied_embeddings ? std::string("tied to the head") : outer(options.embeddings));
            }
            // A .baq is written as blocks finish (memory holds one block); a folder is written at the end.
            std::unique_ptr<BaqModelWriter> writer;
            if (root && to_baq) {
              writer = std::make_unique<BaqModelWriter>(a->out, *m.model);
              options.on_block = [&writer](int, Block& block) { writer->add_block(block); };
            } else if (!root) {
              // Rank 0 writes; another rank drops a finished block as the writer would (one block held).
              options.on_block = [](int, Block& block) {
                for (Linear* l : block.linears()) {
                  l->packed.reset();
                  l->weight.release_pages();
                }
              };
            }
            const QuantizeRun run = quantize_model(*m.model, calib, seqlen, options);
            bar.finish();
            if (!root) return;  // rank 0 has the same model and writes it

            RunContext ctx;
            ctx.model = a->model;
            ctx.calibration_file = a->calib;
            ctx.nsamples = a->nsamples;
            ctx.seqlen = seqlen;
            ctx.seed = a->seed;
            ctx.calibration_text_tokens = static_cast<int64_t>(tokens.size());
            const std::string report_before_eval = quantize_report_json(run, options, ctx);
            if (to_baq) {
              const auto full = nlohmann::json::parse(report_before_eval);
              nlohmann::json summary = {{"tool", full["tool"]},         {"method", full["method"]},
                                        {"settings", full["settings"]}, {"calibration", full["calibration"]},
                                        {"totals", full["totals"]}};
              // Wall times stay in report.json: the .baq is byte-identical for the same inputs and seed.
              summary["totals"].erase("seconds");
              writer->finish(*m.model, m.tokenizer.get(), {{"quantization", summary}});
            }
            if (!a->eval.empty()) {
              const LoadedModel original = load_model(a->model, a->tokenizer, /*need_tokenizer=*/false);
              // The .baq's blocks were released as they were written: evaluate the file itself.
              LoadedModel written;
              if (to_baq) written = load_model(a->out, "", /*need_tokenizer=*/false);
              const Model& quantized = to_baq ? *written.model : *m.model;
              const std::vector<int> eval_tokens = m.tokenizer->encode(read_text_file(a->eval), /*add_special=*/true);
              PplOptions eval;
              eval.bos = m.tokenizer->adds_bos() ? m.tokenizer->bos_id() : -1;
              eval.seqlen = std::min(m.config.max_seq_len, 2048);
              eval.max_windows = a->eval_max_windows;
              ProgressBar eval_bar("eval", "windows");
              eval.progress = [&eval_bar](int64_t done, int64_t total) { eval_bar.update(done, total); };
              KldResult kld;
              const PplResult r = evaluate_perplexity(quantized, eval_tokens, eval, original.model.get(), &kld);
              eval_bar.finish();
              ctx.evaluated = true;
              ctx.eval_text = a->eval;
              ctx.eval_protocol = protocol_name(r.protocol);
              ctx.eval_seqlen = r.seqlen;
              ctx.eval_tokens = r.predicted;
              ctx.ppl = r.perplexity();
              ctx.reference_ppl = kld.reference.perplexity();
              ctx.kld_mean = kld.kl_mean;
              ctx.top1_agreement = kld.top1_agreement;
              fmt::print("eval ppl {:.6f} (original {:.6f}), kld mean {:.6f}, top-1 agreement {:.2f}%\n", ctx.ppl,
                         ctx.reference_ppl, ctx.kld_mean, 100 * ctx.top1_agreement);
            }
            const std::string report = quantize_report_json(run, options, ctx);
            if (to_baq) {
              write_file_atomically(report_path, report);
            } else {
              write_model_folder(a->out, *m.model, m.tokenizer.get(), {{"report.json", report}});
            }
            double loss = 0, proxy = 0;
            for (const auto& r : run.layers) loss += r.loss, proxy += r.proxy_loss;
            fmt::print("quantized {} layers, {} weights: {:.4f} bits per weight, {:.4f} in codes "
                       "(bits: codes {:.0f}, scales/zeros {:.0f}, widths {:.0f}, one-level means {:.0f})\n",
                       run.layers.size(), run.quantized_weights, run.bits_per_weight(), run.code_bits_per_weight(),
                       run.bits.codes, run.bits.ranges, run.bits.widths, run.bits.means);
            if (const auto& check = run.allocation_check) {
              std::string measured;
              for (const auto& [kld, what] : {std::pair{check->model_wide_kld, "model-wide"}, std::pair{check->per_layer_kld, "BAQ per layer"},
                                             std::pair{check->uniform_kld, "uniform GPTQ"}})
                if (kld >= 0) measured += fmt::format("{}{} {:.6g}", measured.empty() ? "" : ", ", what, kld);
              fmt::print("allocation check: output KL divergence on {} calibration tokens: {}; quantized {}\n", check->tokens, measured,
                         check->chosen == "model" ? "model-wide" : check->chosen == "layer" ? "BAQ per layer" : "with uniform GPTQ");
            }
            fmt::print("proxy loss {:.6g}  time {:.2f} s  peak memory {:.1f} MiB\n", proxy, run.seconds, peak_rss_mib());
            const StageSeconds& st = run.stages;
            fmt::print("stages: forward {:.2f} s, Hessians {:.2f} s, solve {:.2f} s, pack {:.2f} s, write {:.2f} s\n",
                       st.forward, st.hessian, st.solve, st.pack, st.write);
            for (size_t r = 0; ranks.distributed() && r < run.ranks.size(); ++r) {
              const StageSeconds& rs = run.ranks[r].stages;
              fmt::print("  rank {} ({} windows): forward {:.2f} s, Hessians {:.2f} s, reduce {:.2f} s, solve {:.2f} s, "
                         "pack {:.2f} s, broadcast {:.2f} s\n",
                         r, run.ranks[r].windows, rs.forward, rs.hessian, rs.reduce, rs.solve, rs.pack, rs.broadcast);
            }
            if (to_baq)
              fmt::print("wrote {} ({} bytes) and {}\n", a->out, std::filesystem::file_size(a->out), report_path);
            else
              fmt::print("wrote {} (dequantized checkpoint + report.json)\n", a->out);
          }};
}

}  // namespace baq::cli
