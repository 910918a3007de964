// The damage-per-byte table: RTN, GPTQ and BAQ (per layer and model-wide) at stored budgets from 2 to
// 4.5 bits per weight in the blocks, the whole model quantized (head 6.5, embedding 4.5 bpw, the CLI's
// defaults), each written as a .baq and its file bytes printed beside its KLD and perplexity — and,
// for kdoc-6.8M, llama.cpp's rows on the same text and protocol (from the issue tracker; llama.cpp is
// not installed here). Calibration: C4 (seed 0). Evaluation: the llama.cpp protocol (windows of
// seqlen scoring their second half).
// Usage: bench_quant_table [kdoc|outliers|stories] [nsamples] [max-windows] [text]
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <string>

#include "baq/blas.hpp"
#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/perplexity.hpp"

using namespace baq;

int main(int argc, char** argv) {
  baq::configure_blas();
  const std::string which = argc > 1 ? argv[1] : "kdoc";
  const int nsamples = argc > 2 ? std::stoi(argv[2]) : 128;
  const int64_t max_windows = argc > 3 ? std::stoll(argv[3]) : 0;
  const std::string shared = BAQ_SHARED_DIR;
  std::string model, tokenizer, text;
  const int seqlen = 256;
  if (which == "stories") {
    model = shared + "/models/stories260K/stories260K.bin";
    tokenizer = shared + "/models/stories260K/tok512.bin";
    text = shared + "/data/tinystories/val.txt";
  } else {
    model = shared + (which == "outliers" ? "/models/kdoc-6.8M-outliers/hf" : "/models/kdoc-6.8M/hf");
    text = shared + "/data/kdoc/val.txt";
  }
  if (argc > 4) text = argv[4];
  const std::filesystem::path tmp = std::filesystem::temp_directory_path() / fmt::format("bench_quant_table.{}", ::getpid());
  std::filesystem::create_directories(tmp);
  try {
    const LoadedModel fp = load_model(model, tokenizer);
    const auto calib_tokens = fp.tokenizer->encode(read_text_file(shared + "/data/c4/c4-sample-200.jsonl"), true);
    const auto calib = sample_calibration_windows(calib_tokens, nsamples, seqlen, 0);
    const auto eval_tokens = fp.tokenizer->encode(read_text_file(text), true);
    PplOptions eval;
    eval.protocol = PplProtocol::LlamaCpp;
    eval.seqlen = seqlen;
    eval.max_windows = max_windows;
    eval.bos = fp.tokenizer->adds_bos() ? fp.tokenizer->bos_id() : -1;
    const PplResult base = evaluate_perplexity(*fp.model, eval_tokens, eval);
    std::printf("%s: calibration %d x %d tokens of C4 (seed 0), evaluation %s (llama.cpp protocol, seqlen %d, %lld tokens "
                "scored); head %.1f, embedding %.1f stored bpw\n\n",
                which.c_str(), nsamples, seqlen, text.c_str(), seqlen, static_cast<long long>(base.predicted), 6.5, 4.5);
    std::printf("| method | --bpw | blocks bpw (stored) | file bytes | ppl | KLD mean | top-1 %% | quantize s |\n"
                "|---|---|---|---|---|---|---|---|\n");
    std::printf("| fp | - | - | - | %.3f | 0 | 100 | - |\n", base.perplexity());
    if (which == "kdoc")
      std::printf("| llama.cpp Q2_K | - | 2.93 | 3,039,200 | 88.845 | 0.01617 | - | - |\n"
                  "| llama.cpp Q3_K_S | - | 3.44 | 3,445,216 | 88.049 | 0.00456 | - | - |\n"
                  "| llama.cpp Q3_K_M | - | 3.85 | 3,688,416 | 87.799 | 0.00349 | - | - |\n"
                  "| llama.cpp Q4_K_M | - | 4.70 | 4,329,440 | 87.396 | 0.00118 | - | - |\n");
    if (which == "outliers")
      std::printf("| llama.cpp Q2_K | - | - | - | - | 0.322 | - | - |\n| llama.cpp Q3_K_S | - | - | 3,445,216 | - | 0.0214 | - | - |\n"
                  "| llama.cpp Q4_K_M | - | - | - | - | 0.0224 | - | - |\n");
    struct Config {
      QuantMethod method;
      Allocation alloc;
    };
    const Config configs[] = {{QuantMethod::Rtn, Allocation::Layer},
                              {QuantMethod::Gptq, Allocation::Layer},
                              {QuantMethod::Baq, Allocation::Layer},
                              {QuantMethod::Baq, Allocation::Model}};
    for (double bpw : {2.6, 3.0, 3.3, 3.6, 4.0, 4.5})
      for (const Config& cfg : configs) {
        LoadedModel q = load_model(model, tokenizer);
        const ModelConfig& c = q.model->config();
        QuantizeOptions o;
        o.method = cfg.method;
        o.allocation = cfg.alloc;
        o.bpw = bpw;
        o.settings.clip_search = true;  // the CLI's default
        o.head = uniform_settings_for_bpw(6.5, c.vocab_size, c.embed_dim, o.settings);
        if (!c.tied_embeddings) o.embeddings = uniform_settings_for_bpw(4.5, c.vocab_size, c.embed_dim, o.settings);
        QuantizeRun run;
        try {
          run = quantize_model(*q.model, calib, seqlen, o);
        } catch (const Error& e) {
          std::printf("| %s | %g | failed: %s |\n", method_name(cfg.method), bpw, e.what());
          continue;
        }
        const std::string file = (tmp / "q.baq").string();
        save_baq(file, *q.model, q.tokenizer.get(), nlohmann::json::object());
        const auto bytes = std::filesystem::file_size(file);
        KldResult k;
        const PplResult r = evaluate_perplexity(*q.model, eval_tokens, eval, fp.model.get(), &k);
        double block_bits = 0, block_weights = 0;
        for (const auto& l : run.layers)
          if (l.name.starts_with("blocks.")) block_bits += l.storage.total(), block_weights += static_cast<double>(l.rows * l.cols);
        const std::string name = cfg.method == QuantMethod::Baq
                                     ? fmt::format("baq/{}", cfg.alloc == Allocation::Layer ? "layer" : "model")
                                     : method_name(cfg.method);
        std::printf("| %s | %g | %.3f | %s | %.3f | %.5f | %.2f | %.1f |\n", name.c_str(), bpw, block_bits / block_weights,
                    std::to_string(bytes).c_str(), r.perplexity(), k.kl_mean, 100 * k.top1_agreement,
                    run.seconds);
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
