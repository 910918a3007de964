// baq — post-training weight quantization of LLMs with provably optimal bit allocation.
#include <omp.h>

#include <cstdio>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "baq/error.hpp"
#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"baq: post-training weight quantization of LLMs with optimal bit allocation"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "Worker threads (default: all cores)")->check(CLI::NonNegativeNumber);
  const std::vector<baq::cli::Command> commands = {
      baq::cli::add_info_command(app), baq::cli::add_ppl_command(app), baq::cli::add_quantize_command(app),
      baq::cli::add_report_command(app), baq::cli::add_generate_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (threads > 0) omp_set_num_threads(threads);
  try {
    for (const auto& command : commands)
      if (command.app->parsed()) command.run();
  } catch (const baq::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "baq: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "baq: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
