#pragma once
#include <functional>

#include <CLI/CLI.hpp>

#include "validators.hpp"

namespace baq::cli {

// What every MODEL argument accepts (load_model picks the reader).
inline constexpr const char* kModelArgumentHelp =
    "Hugging Face folder (safetensors or pytorch_model.bin, sharded or not), .safetensors, .baq, GGUF, "
    "torch.save .bin (config.json beside it) or llama2.c .bin";

// --input-bits, for the commands that run packed weights (generate, ppl): the input rounding their
// fused products use (set_fused_input_bits).
inline void add_input_bits_option(CLI::App* sub, int& bits) {
  sub->add_option("--input-bits", bits,
                  "Input rounding in the fused products of packed weights (AVX-512 VNNI): 16 bits, or 8 (llama.cpp's "
                  "Q8 trade: one integer product per 64 weights instead of two; more damage, and faster only where "
                  "the products and not memory bound the token: see README)")
      ->check(CLI::IsMember({8, 16}))
      ->capture_default_str();
}

// A subcommand registers its flags on `app` and hands back what to run when it is chosen.
struct Command {
  CLI::App* app = nullptr;
  std::function<void()> run;
};

Command add_info_command(CLI::App& app);
Command add_ppl_command(CLI::App& app);
Command add_quantize_command(CLI::App& app);
Command add_report_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_tokenize_command(CLI::App& app);

}  // namespace baq::cli
