// baq — post-training weight quantization of LLMs with provably optimal bit allocation.
#include <omp.h>

#include <cstdio>
#include <new>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "baq/blas.hpp"
#include "baq/error.hpp"
#include "baq/output.hpp"
#include "commands.hpp"

namespace {

// Every failure is one line on stderr and exit status 1, argument errors included.
int report_error(const std::string& message) {
  std::fflush(stdout);
  std::string line = message;
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  fmt::print(stderr, "baq: error: {}\n", line);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  baq::install_signal_cleanup();
  baq::configure_blas();
  CLI::App app{"baq: post-training weight quantization of LLMs with optimal bit allocation"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "Worker threads (default: all cores)")->check(baq::cli::IntRange(0, 4096));
  const std::vector<baq::cli::Command> commands = {
      baq::cli::add_info_command(app),     baq::cli::add_ppl_command(app),      baq::cli::add_quantize_command(app),
      baq::cli::add_report_command(app),   baq::cli::add_generate_command(app), baq::cli::add_tokenize_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string sub;
    for (const auto& command : commands)
      if (command.app->parsed()) sub = command.app->get_name();
    return report_error(fmt::format("{} (see baq {}--help)", e.what(), sub.empty() ? "" : sub + " "));
  }
  if (threads > 0) omp_set_num_threads(threads);
  try {
    for (const auto& command : commands)
      if (command.app->parsed()) command.run();
  } catch (const std::bad_alloc&) {
    return report_error("out of memory (a request for memory failed; lower --nsamples/--seqlen or use a smaller model)");
  } catch (const std::exception& e) {
    return report_error(e.what());
  }
  return 0;
}
