#pragma once
#include <functional>

#include <CLI/CLI.hpp>

#include "validators.hpp"

namespace baq::cli {

// What every MODEL argument accepts (load_model picks the reader).
inline constexpr const char* kModelArgumentHelp =
    "Hugging Face folder (safetensors or pytorch_model.bin, sharded or not), .safetensors, .baq, GGUF, "
    "torch.save .bin (config.json beside it) or llama2.c .bin";

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
