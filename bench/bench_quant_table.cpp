// The damage-per-byte table: RTN, GPTQ and BAQ (per layer and model-wide) at stored budgets in the
// blocks, the whole model quantized (head 5.5 bpw, embedding 4.5 under 4-bit blocks and 5.5 from 4: the
// CLI's defaults; outlier smoothing on, as in the CLI), each written as a .baq and its file bytes
// printed beside its KL divergence on every evaluation text — and, for kdoc-6.8M, llama.cpp's rows on
// the same text and protocol (from the issue tracker; llama.cpp is not installed here). Calibration:
// 128 × 256 tokens of C4 (seed 0). Evaluation: the llama.cpp protocol (windows of 256 scoring their
// second half).
//   bench_quant_table kdoc                       kdoc-6.8M at llama.cpp's Q2_K/Q3_K_S/Q4_K_M sizes
//   bench_quant_table stories --bpw 2,2.5,3,4 --texts tinystories,wikitext2,c4,kdoc --methods gptq,baq-layer,baq-model
// Texts: tinystories, wikitext2, c4 (the calibration file itself: in domain), kdoc, ptb, or a path.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "baq/blas.hpp"
#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/perplexity.hpp"

using namespace baq;

namespace {

struct Config {
  std::string name;
  QuantMethod method;
  Allocation alloc;
};

}  // namespace

int main(int argc, char** argv) {
  baq::configure_blas();
  CLI::App app{"baq damage-per-byte table"};
  std::string which = "kdoc";
  std::vector<double> bpw_list;
  std::vector<std::string> texts_named, methods = {"rtn", "gptq", "baq-layer", "baq-model"};
  int nsamples = 128;
  int64_t max_windows = 0;
  app.add_option("model", which, "kdoc, outliers (kdoc-6.8M-outliers) or stories (stories260K)")->capture_default_str();
  app.add_option("--nsamples", nsamples, "calibration windows of 256 tokens")->capture_default_str();
  app.add_option("--max-windows", max_windows, "evaluate only the first K windows of each text (0: all)");
  app.add_option("--bpw", bpw_list, "stored bits per weight of the blocks, comma-separated (default: kdoc/outliers at "
                                    "llama.cpp's Q2_K/Q3_K_S/Q4_K_M file sizes, stories 2,2.5,3,4)")->delimiter(',');
  app.add_option("--texts", texts_named, "evaluation texts, comma-separated (default: the model's own domain)")->delimiter(',');
  app.add_option("--methods", methods, "rtn, gptq, baq-layer, baq-model, comma-separated")->delimiter(',')->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string shared = BAQ_SHARED_DIR;
  const std::map<std::string, std::string> named = {{"tinystories", "/data/tinystories/val.txt"},
                                                    {"wikitext2", "/data/wikitext2-raw/test.txt"},
                                                    {"c4", "/data/c4/c4-sample-200.jsonl"},
                                                    {"kdoc", "/data/kdoc/val.txt"},
                                                    {"ptb", "/data/ptb/test.txt"}};
  std::string model, tokenizer;
  std::vector<double> rates;
  if (which == "stories") {
    model = shared + "/models/stories260K/stories260K.bin";
    tokenizer = shared + "/models/stories260K/tok512.bin";
    if (texts_named.empty()) texts_named = {"tinystories"};
    rates = {2.0, 2.5, 3.0, 4.0};
  } else if (which == "kdoc" || which == "outliers") {
    model = shared + (which == "outliers" ? "/models/kdoc-6.8M-outliers/hf" : "/models/kdoc-6.8M/hf");
    if (texts_named.empty()) texts_named = {"kdoc"};
    rates = {2.78, 3.47, 4.75};  // file bytes just under Q2_K's, Q3_K_S's and Q4_K_M's with the default head/embedding
  } else {
    std::fprintf(stderr, "bench_quant_table: unknown model '%s' (kdoc, outliers or stories)\n", which.c_str());
    return 2;
  }
  if (!bpw_list.empty()) rates = bpw_list;
  std::vector<Config> configs;
  for (const std::string& m : methods) {
    if (m == "rtn") configs.push_back({"rtn", QuantMethod::Rtn, Allocation::Layer});
    else if (m == "gptq") configs.push_back({"gptq", QuantMethod::Gptq, Allocation::Layer});
    else if (m == "baq-layer") configs.push_back({"baq/layer", QuantMethod::Baq, Allocation::Layer});
    else if (m == "baq-model") configs.push_back({"baq/model", QuantMethod::Baq, Allocation::Model});
    else {
      std::fprintf(stderr, "bench_quant_table: unknown method '%s'\n", m.c_str());
      return 2;
    }
  }
  const int seqlen = 256;
  const std::filesystem::path tmp = std::filesystem::temp_directory_path() / fmt::format("bench_quant_table.{}", ::getpid());
  std::filesystem::create_directories(tmp);
  try {
    const LoadedModel fp = load_model(model, tokenizer);
    const auto calib_tokens = fp.tokenizer->encode(read_text_file(shared + "/data/c4/c4-sample-200.jsonl"), true);
    const auto calib = sample_calibration_windows(calib_tokens, nsamples, seqlen, 0);
    PplOptions eval;
    eval.protocol = PplProtocol::LlamaCpp;
    eval.seqlen = seqlen;
    eval.max_windows = max_windows;
    eval.bos = fp.tokenizer->adds_bos() ? fp.tokenizer->bos_id() : -1;
    struct Text {
      std::string name;
      std::vector<int> tokens;
    };
    std::vector<Text> texts;
    std::string header = "| method | --bpw | blocks bpw (stored) | file bytes |", rule = "|---|---|---|---|";
    for (const std::string& t : texts_named) {
      const auto it = named.find(t);
      texts.push_back({t, fp.tokenizer->encode(read_text_file(it != named.end() ? shared + it->second : t), true)});
      header += fmt::format(" KLD {} |", t);
      rule += "---|";
    }
    header += fmt::format(" ppl {} | top-1 % {} | quantize s |", texts.front().name, texts.front().name);
    rule += "---|---|---|";
    const PplResult base = evaluate_perplexity(*fp.model, texts.front().tokens, eval);
    std::printf("%s: calibration %d x %d tokens of C4 (seed 0), llama.cpp protocol (seqlen %d%s); head 5.5, embedding "
                "4.5 (blocks < 4 bpw) or 5.5 stored bpw; fp ppl on %s %.3f\n\n%s\n%s\n",
                which.c_str(), nsamples, seqlen, seqlen,
                max_windows > 0 ? fmt::format(", first {} windows", max_windows).c_str() : "", texts.front().name.c_str(),
                base.perplexity(), header.c_str(), rule.c_str());
    if (which == "kdoc" && texts.size() == 1 && texts.front().name == "kdoc")
      std::printf("| llama.cpp Q2_K | - | 2.93 | 3,039,200 | 0.01617 | 88.845 | - | - |\n"
                  "| llama.cpp Q3_K_S | - | 3.44 | 3,445,216 | 0.00456 | 88.049 | - | - |\n"
                  "| llama.cpp Q3_K_M | - | 3.85 | 3,688,416 | 0.00349 | 87.799 | - | - |\n"
                  "| llama.cpp Q4_K_M | - | 4.70 | 4,329,440 | 0.00118 | 87.396 | - | - |\n");
    if (which == "outliers" && texts.size() == 1 && texts.front().name == "kdoc")
      std::printf("| llama.cpp Q2_K | - | - | - | 0.322 | - | - | - |\n| llama.cpp Q3_K_S | - | - | 3,445,216 | 0.0214 | - | - | - |\n"
                  "| llama.cpp Q4_K_M | - | - | - | 0.0224 | - | - | - |\n");
    for (double bpw : rates)
      for (const Config& cfg : configs) {
        LoadedModel q = load_model(model, tokenizer);
        const ModelConfig& c = q.model->config();
        QuantizeOptions o;
        o.method = cfg.method;
        o.allocation = cfg.alloc;
        o.bpw = bpw;
        o.settings.clip_search = true;  // the CLI's defaults
        o.head = uniform_settings_for_bpw(5.5, c.vocab_size, c.embed_dim, o.settings);
        if (!c.tied_embeddings) o.embeddings = uniform_settings_for_bpw(bpw < 4 ? 4.5 : 5.5, c.vocab_size, c.embed_dim, o.settings);
        QuantizeRun run;
        try {
          run = quantize_model(*q.model, calib, seqlen, o);
        } catch (const Error& e) {
          std::printf("| %s | %g | failed: %s |\n", cfg.name.c_str(), bpw, e.what());
          continue;
        }
        const std::string file = (tmp / "q.baq").string();
        save_baq(file, *q.model, q.tokenizer.get(), nlohmann::json::object());
        const auto bytes = std::filesystem::file_size(file);
        double block_bits = 0, block_weights = 0;
        for (const auto& l : run.layers)
          if (l.name.starts_with("blocks.")) block_bits += l.storage.total(), block_weights += static_cast<double>(l.rows * l.cols);
        std::string name = cfg.name;
        if (run.allocation_check) name += " → " + run.allocation_check->chosen;
        std::string row = fmt::format("| {} | {:g} | {:.3f} | {} |", name, bpw, block_bits / block_weights, bytes);
        PplResult first;
        KldResult first_kld;
        for (size_t t = 0; t < texts.size(); ++t) {
          KldResult k;
          const PplResult r = evaluate_perplexity(*q.model, texts[t].tokens, eval, fp.model.get(), &k);
          if (t == 0) first = r, first_kld = k;
          row += fmt::format(" {:.5f} |", k.kl_mean);
        }
        row += fmt::format(" {:.3f} | {:.2f} | {:.1f} |", first.perplexity(), 100 * first_kld.top1_agreement, run.seconds);
        std::printf("%s\n", row.c_str());
        std::fflush(stdout);
      }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_quant_table: %s\n", e.what());
    std::filesystem::remove_all(tmp);
    return 1;
  }
  std::filesystem::remove_all(tmp);
  return 0;
}
