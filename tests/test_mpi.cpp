// `mpirun -np N baq quantize` on localhost against the one-process run: one rank writes the plain run's
// file byte for byte, 2 and 3 ranks (an uneven split) are deterministic and agree with it in
// perplexity, and a rank with other inputs, or one that fails, ends the job with one line and no file.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_util.hpp"

namespace baq::test {
namespace {

namespace fs = std::filesystem;

const std::string kBaq = BAQ_BINARY;

// One thread per rank and no binding: three ranks share the CI machine's two cores. Shared memory
// between ranks without cross-process reads (containers often forbid ptrace's process_vm_readv).
std::string mpirun(int ranks) {
  return fmt::format("mpirun -q --allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none "
                     "-x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY=passive -np {} ",
                     ranks);
}

double perplexity(const std::string& model, const std::string& text) {
  const CommandResult r = run_command(fmt::format("{} ppl {} --text {} --seqlen 128 --max-windows 24", kBaq, model, text));
  EXPECT_EQ(r.status, 0) << r.output;
  const size_t at = r.output.find("\nppl ");
  if (at == std::string::npos) {
    ADD_FAILURE() << r.output;
    return 0;
  }
  return std::stod(r.output.substr(at + 5));
}

struct Case {
  std::string name, model, extra, calib, text;
};

std::vector<Case> cases() {
  const std::string s = shared_dir();
  return {{"stories260K", s + "/models/stories260K/stories260K.bin",
           "--tokenizer " + s + "/models/stories260K/tok512.bin --method baq --bpw 3.5", s + "/data/tinystories/val.txt",
           s + "/data/tinystories/val.txt"},
          {"kdoc-6.8M", s + "/models/kdoc-6.8M/hf", "--method baq --bpw 3.3 --alloc model --sensitivity-tokens 128",
           s + "/data/c4/c4-sample-200.jsonl", s + "/data/kdoc/val.txt"}};
}

std::string quantize_args(const Case& c, const std::string& out, int nsamples) {
  return fmt::format("quantize {} {} --calib {} --nsamples {} --seqlen 128 --out {}", c.model, c.extra, c.calib, nsamples, out);
}

TEST(Mpi, OneRankWritesThePlainRunsFile) {
  const Case c = cases()[0];
  TempDir dir;
  const CommandResult plain = run_command(kBaq + " " + quantize_args(c, dir.file("plain.baq"), 16));
  ASSERT_EQ(plain.status, 0) << plain.output;
  const CommandResult one = run_command(mpirun(1) + kBaq + " " + quantize_args(c, dir.file("one.baq"), 16));
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_EQ(read_bytes(dir.file("plain.baq")), read_bytes(dir.file("one.baq")));
}

// 40 windows in batches of 8: two ranks take 2 and 3 batches, three ranks 1, 2 and 2 (uneven shares).
TEST(Mpi, TwoAndThreeRanksAreDeterministicAndAgreeWithOne) {
  constexpr int kWindows = 40;
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    const CommandResult plain = run_command(kBaq + " " + quantize_args(c, dir.file("plain.baq"), kWindows));
    ASSERT_EQ(plain.status, 0) << plain.output;
    for (int ranks : {2, 3}) {
      const std::string a = dir.file(fmt::format("np{}a.baq", ranks)), b = dir.file(fmt::format("np{}b.baq", ranks));
      for (const std::string& out : {a, b}) {
        const CommandResult r = run_command(mpirun(ranks) + kBaq + " " + quantize_args(c, out, kWindows));
        ASSERT_EQ(r.status, 0) << r.output;
      }
      EXPECT_EQ(read_bytes(a), read_bytes(b)) << ranks << " ranks: two runs differ";
      const double p1 = perplexity(dir.file("plain.baq"), c.text), pn = perplexity(a, c.text);
      EXPECT_GT(p1, 1.0);
      EXPECT_NEAR(pn / p1, 1.0, 1e-4) << ranks << " ranks: ppl " << pn << " vs " << p1;
      // The report records every rank's windows and stages.
      const auto report = nlohmann::json::parse(read_bytes(a.substr(0, a.size() - 4) + ".report.json"));
      ASSERT_EQ(report.at("ranks").size(), static_cast<size_t>(ranks));
      int windows = 0;
      for (const auto& r : report.at("ranks")) {
        windows += r.at("windows").get<int>();
        EXPECT_GT(r.at("forward_seconds").get<double>(), 0.0);
        EXPECT_GT(r.at("solve_seconds").get<double>(), 0.0);
        EXPECT_GT(r.at("reduce_seconds").get<double>(), 0.0);
        EXPECT_GT(r.at("broadcast_seconds").get<double>(), 0.0);
      }
      EXPECT_EQ(windows, kWindows);
    }
  }
}

// Every line of `output` that is not empty; the job's whole message must be one of them.
std::vector<std::string> lines_of(const std::string& output) {
  std::vector<std::string> lines;
  size_t at = 0;
  while (at < output.size()) {
    const size_t end = std::min(output.find('\n', at), output.size());
    if (end > at) lines.push_back(output.substr(at, end - at));
    at = end + 1;
  }
  return lines;
}

// Rank 0 runs `c`, rank 1 runs `other` (mpirun's MPMD form), both writing `out`: the job must fail
// with exactly one line, which is returned.
std::string one_line_failure(const Case& c, const Case& other, const std::string& out) {
  const CommandResult r = run_command(fmt::format("{}{} {} : -np 1 {} {}", mpirun(1), kBaq, quantize_args(c, out, 16), kBaq,
                                                  quantize_args(other, out, 16)));
  EXPECT_NE(r.status, 0);
  const auto lines = lines_of(r.output);
  EXPECT_EQ(lines.size(), 1u) << r.output;
  return lines.empty() ? std::string() : lines[0];
}

TEST(Mpi, ARankWithAnotherModelStopsEveryRankWithOneLine) {
  const Case c = cases()[0];
  TempDir dir;
  std::string bytes = read_bytes(c.model);
  bytes[bytes.size() / 2] ^= 1;  // one weight's bit
  write_bytes(dir.file("other.bin"), bytes);
  Case other = c;
  other.model = dir.file("other.bin");
  const std::string line = one_line_failure(c, other, dir.file("out.baq"));
  EXPECT_NE(line.find("rank 1: the model differs from rank 0's"), std::string::npos) << line;
  EXPECT_NE(line.find("other.bin"), std::string::npos) << line;
  for (const auto& e : fs::directory_iterator(dir.path())) EXPECT_EQ(e.path().filename(), "other.bin") << "left behind";
}

TEST(Mpi, ARankThatFailsEndsTheJobWithOneLineAndNoFile) {
  const Case c = cases()[0];
  TempDir dir;
  Case broken = c;
  broken.calib = dir.file("missing.txt");
  const std::string line = one_line_failure(c, broken, dir.file("out.baq"));
  EXPECT_NE(line.find("baq: error: rank 1: "), std::string::npos) << line;
  EXPECT_NE(line.find("missing.txt"), std::string::npos) << line;
  EXPECT_TRUE(fs::is_empty(dir.path())) << "partial output left";
}

TEST(Mpi, FewerWindowsThanRanksIsRefusedOnce) {
  const Case c = cases()[0];
  TempDir dir;
  const CommandResult r = run_command(mpirun(3) + kBaq + " " + quantize_args(c, dir.file("out.baq"), 2));
  EXPECT_NE(r.status, 0);
  const auto lines = lines_of(r.output);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_NE(lines[0].find("2 calibration windows cannot be shared by 3 ranks"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

}  // namespace
}  // namespace baq::test
