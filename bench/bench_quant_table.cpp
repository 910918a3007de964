// Perplexity / KLD table for FP32, RTN, GPTQ and BAQ (per-layer and model-wide) at 4, 3, 2.5 and 2 bits on the real checkpoints in
// ../shared, with the calibration defaults scaled down so it finishes in minutes, and GPTQ's wall
// time per layer. Usage: bench_quant_table [stories|kdoc] [nsamples] [max-windows]
#include <cmath>
#include <cstdio>

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
  const std::string which = argc > 1 ? argv[1] : "stories";
  const int nsamples = argc > 2 ? std::stoi(argv[2]) : 64;
  const int64_t max_windows = argc > 3 ? std::stoll(argv[3]) : 0;
  const std::string shared = BAQ_SHARED_DIR;
  std::string model, tokenizer, text;
  int seqlen = 0;
  if (which == "stories") {
    model = shared + "/models/stories260K/stories260K.bin";
    tokenizer = shared + "/models/stories260K/tok512.bin";
    text = shared + "/data/tinystories/val.txt";
    seqlen = 512;
  } else {
    model = shared + "/models/kdoc-6.8M/hf";
    text = shared + "/data/kdoc/val.txt";
    seqlen = 256;
  }
  try {
    const LoadedModel fp = load_model(model, tokenizer);
    const auto calib_tokens = fp.tokenizer->encode(read_text_file(shared + "/data/c4/c4-sample-200.jsonl"), true);
    const auto calib = sample_calibration_windows(calib_tokens, nsamples, seqlen, 0);
    const auto eval_tokens = fp.tokenizer->encode(read_text_file(text), true);
    PplOptions eval;
    eval.seqlen = seqlen;
    eval.max_windows = max_windows;
    const PplResult base = evaluate_perplexity(*fp.model, eval_tokens, eval);
    std::printf("%s: calibration %d x %d tokens of C4, evaluation %s (windows protocol, %lld tokens scored)\n\n",
                which.c_str(), nsamples, seqlen, text.c_str(), static_cast<long long>(base.predicted));
    std::printf("| method | bits | bpw (all stored) | code bpw | ppl | KLD mean | top-1 %% | quantize s | s per layer |\n"
                "|---|---|---|---|---|---|---|---|---|\n");
    std::printf("| fp32 | 32 | 32 | 32 | %.4f | 0 | 100 | - | - |\n", base.perplexity());
    struct Config {
      QuantMethod method;
      double bits;
      Allocation alloc;
    };
    std::vector<Config> configs;
    for (double bits : {4.0, 3.0, 2.5, 2.0}) {
      if (bits == std::floor(bits))
        for (auto m : {QuantMethod::Rtn, QuantMethod::Gptq}) configs.push_back({m, bits, Allocation::Layer});
      configs.push_back({QuantMethod::Baq, bits, Allocation::Layer});
      configs.push_back({QuantMethod::Baq, bits, Allocation::Model});
    }
    for (const Config& cfg : configs) {
      LoadedModel q = load_model(model, tokenizer);
      QuantizeOptions o;
      o.method = cfg.method;
      o.settings.bits = static_cast<int>(cfg.bits);
      o.rate = cfg.bits;
      o.allocation = cfg.alloc;
      const QuantizeRun run = quantize_model(*q.model, calib, seqlen, o);
      KldResult k;
      const PplResult r = evaluate_perplexity(*q.model, eval_tokens, eval, fp.model.get(), &k);
      const std::string name = cfg.method == QuantMethod::Baq
                                   ? fmt::format("baq/{}", cfg.alloc == Allocation::Layer ? "layer" : "model")
                                   : method_name(cfg.method);
      std::printf("| %s | %g | %.4f | %.4f | %.4f | %.5f | %.2f | %.2f | %.4f |\n", name.c_str(), cfg.bits,
                  run.bits_per_weight(), run.code_bits_per_weight(), r.perplexity(), k.kl_mean,
                  100 * k.top1_agreement, run.seconds, run.seconds / static_cast<double>(run.layers.size()));
      std::fflush(stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_quant_table: %s\n", e.what());
    return 1;
  }
  return 0;
}
