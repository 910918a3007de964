// baq — post-training weight quantization of LLMs with provably optimal bit allocation.
#include <omp.h>

#include <cstdio>
#include <new>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "baq/blas.hpp"
#include "baq/error.hpp"
#include "baq/memory.hpp"
#include "baq/output.hpp"
#include "baq/ranks.hpp"
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

// A failure under MPI: one that every rank met alike is reported once by rank 0 and every rank ends
// normally; one a single rank met is reported by it, naming itself, and ends the whole job.
int end_with_error(const std::exception& e) {
  const baq::Ranks& ranks = baq::Ranks::world();
  if (!ranks.distributed()) return report_error(e.what());
  if (dynamic_cast<const baq::CollectiveError*>(&e) != nullptr) {
    const int rc = ranks.is_root() ? report_error(e.what()) : 1;
    baq::Ranks::finalize();
    return rc;
  }
  report_error(baq::rank_prefixed(e.what()));
  std::fflush(stderr);
  baq::Ranks::abort(1);
}

int main(int argc, char** argv) {
  baq::use_huge_pages(argv);
  baq::Ranks::init(&argc, &argv);
  baq::install_signal_cleanup();
  baq::configure_blas();
  baq::retain_freed_memory();
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
    baq::Ranks::finalize();
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    baq::Ranks::finalize();
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string sub;
    for (const auto& command : commands)
      if (command.app->parsed()) sub = command.app->get_name();
    // Every rank parses the same arguments: reported once.
    return end_with_error(baq::CollectiveError(fmt::format("{} (see baq {}--help)", e.what(), sub.empty() ? "" : sub + " ")));
  }
  if (threads > 0) omp_set_num_threads(threads);
  try {
    for (const auto& command : commands)
      if (command.app->parsed()) {
        if (baq::Ranks::world().distributed() && command.app->get_name() != "quantize")
          throw baq::CollectiveError(fmt::format("only `baq quantize` runs across MPI ranks; run `baq {}` without mpirun",
                                                 command.app->get_name()));
        command.run();
      }
  } catch (const std::bad_alloc&) {
    return end_with_error(
        baq::Error("out of memory (a request for memory failed; lower --nsamples/--seqlen or use a smaller model)"));
  } catch (const std::exception& e) {
    return end_with_error(e);
  }
  baq::Ranks::finalize();
  return 0;
}
