// baq deletes or replaces only what it wrote, and never writes where it was not asked: outputs that
// name an input (directly, through a symlink, `..` or a hard link) are refused, existing folders are
// written into only when they are earlier baq outputs, embedded names never become paths, and
// interrupted runs leave no temporaries (or have them swept by the next run).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "baq/baq_file.hpp"
#include "baq/calibrate.hpp"
#include "baq/output.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

namespace fs = std::filesystem;
const std::string kBaq = BAQ_BINARY;

// Every file under `dir` with its contents, to prove a folder untouched.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_bytes(e.path().string());
  return out;
}

class OutputSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    c = small_llama(16, 24, 2, 2, 1, 300, 32, true);
    random_weights(c, 21, w, s);
    fs::create_directories(dir.path() / "model");
    write_llama2c(dir.file("model/model.bin"), c, w);
    std::vector<std::pair<std::string, float>> extra = {{" ", 0.0f}};
    for (int i = 260; i < 300; ++i) extra.emplace_back(std::string(1, static_cast<char>('A' + (i - 260))), 0.0f);
    write_llama2c_tokenizer(dir.file("model/tok.bin"), extra);
    std::string text;
    for (int i = 0; i < 40; ++i) text += "The quick brown fox jumps over the lazy dog. ";
    write_bytes(dir.file("text.txt"), text);
    write_bytes(dir.file("model/notes.txt"), "a file of the user's beside the model\n");
  }
  std::string quantize(const std::string& out, const std::string& cwd = "") {
    return (cwd.empty() ? "" : "cd " + cwd + " && ") + kBaq + " quantize " + dir.file("model/model.bin") +
           " --tokenizer " + dir.file("model/tok.bin") + " --calib " + dir.file("text.txt") +
           " --nsamples 2 --seqlen 16 --bits 3 --out " + out;
  }
  static void expect_refused(const CommandResult& r, const std::string& fragment) {
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_EQ(r.output.rfind("baq: error: ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find(fragment), std::string::npos) << r.output;
  }
  ModelConfig c;
  Weights w;
  Shapes s;
  TempDir dir;
};

TEST_F(OutputSafety, ExistingFoldersAreNeverRemoved) {
  // The current folder, the model's own folder (by three spellings), a home-like folder, the root.
  expect_refused(run_command(quantize(".", dir.path().string())), "refusing to write into a folder holding an input");
  fs::create_directories(dir.path() / "work");
  write_bytes(dir.file("work/keep.txt"), "mine");
  const auto before_work = snapshot(dir.path());
  expect_refused(run_command(quantize(".", dir.file("work"))), "was not written by baq");
  EXPECT_EQ(snapshot(dir.path()), before_work);
  expect_refused(run_command(quantize(dir.file("model"))), "input of this run");
  expect_refused(run_command(quantize(dir.file("model/../model"))), "input of this run");
  fs::create_symlink(dir.path() / "model", dir.path() / "link");
  expect_refused(run_command(quantize(dir.file("link"))), "input of this run");
  fs::remove(dir.path() / "link");
  expect_refused(run_command(quantize("/")), "");
  EXPECT_EQ(snapshot(dir.path()), before_work);  // nothing changed, nothing added
  EXPECT_TRUE(fs::exists("/etc/passwd"));
}

TEST_F(OutputSafety, BaqOutputFolderIsWrittenIntoAndOthersFilesKept) {
  const std::string out = dir.file("q");
  ASSERT_EQ(run_command(quantize(out)).status, 0);
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/" + kOutputManifest));
  write_bytes(out + "/mine.txt", "kept");
  // A second run writes into its own earlier output; the user's file beside it stays.
  const auto r = run_command(quantize(out));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_bytes(out + "/mine.txt"), "kept");
  // A file changed since baq wrote it is not replaced, even in baq's own output folder.
  fs::remove(out + "/report.json");
  write_bytes(out + "/report.json", "the user's");
  expect_refused(run_command(quantize(out)), "changed since baq wrote it");
  EXPECT_EQ(read_bytes(out + "/report.json"), "the user's");
}

TEST_F(OutputSafety, OutputThatIsAnInputIsRefusedWhateverNamesIt) {
  const auto before = snapshot(dir.path());
  // The model file itself as a .baq-named output through a symlink and a hard link.
  fs::create_symlink(dir.path() / "model" / "model.bin", dir.path() / "alias.baq");
  expect_refused(run_command(quantize(dir.file("alias.baq"))), "input of this run");
  fs::remove(dir.path() / "alias.baq");
  fs::create_hard_link(dir.path() / "text.txt", dir.path() / "hard.baq");
  expect_refused(run_command(quantize(dir.file("hard.baq"))), "input of this run");
  fs::remove(dir.path() / "hard.baq");
  // The report file derived from --out is an input (the calibration text).
  fs::create_hard_link(dir.path() / "text.txt", dir.path() / "x.report.json");
  expect_refused(run_command(quantize(dir.file("x.baq"))), "input of this run");
  fs::remove(dir.path() / "x.report.json");
  // An output inside a folder that does not exist is named as such (not as a temporary file).
  expect_refused(run_command(quantize(dir.file("nope/x.baq"))), fmt::format("'{}' does not exist", dir.file("nope")));
  EXPECT_EQ(snapshot(dir.path()), before);

  // baq report R.json --html R.json would replace its input.
  ASSERT_EQ(run_command(quantize(dir.file("q.baq"))).status, 0);
  const std::string report = read_bytes(dir.file("q.report.json"));
  expect_refused(run_command(kBaq + " report " + dir.file("q.report.json") + " --html " + dir.file("q.report.json")),
                 "input of this run");
  EXPECT_EQ(read_bytes(dir.file("q.report.json")), report);
  // An existing output file that is not an input is replaced atomically.
  write_bytes(dir.file("page.html"), "old");
  ASSERT_EQ(run_command(kBaq + " report " + dir.file("q.report.json") + " --html " + dir.file("page.html")).status, 0);
  EXPECT_NE(read_bytes(dir.file("page.html")), "old");
}

TEST_F(OutputSafety, EmbeddedTokenizerNamesNeverBecomePaths) {
  // A .baq whose embedded tokenizer file is named ../victim.txt, or an absolute path.
  const LoadedModel m = load_model(dir.file("model/model.bin"), dir.file("model/tok.bin"));
  QuantizeOptions o;
  o.settings.bits = 3;
  const std::vector<int> calib = sample_calibration_windows(m.tokenizer->encode(read_bytes(dir.file("text.txt")), true), 2, 16, 0);
  QuantizeRun run = quantize_model(*m.model, calib, 16, o);
  fs::create_directories(dir.path() / "sub");
  write_bytes(dir.file("victim.txt"), "precious");
  const std::string bytes = m.tokenizer->files()[0].bytes;
  for (const std::string& name : {std::string("../victim.txt"), dir.file("victim.txt"), std::string("a/b.bin"), std::string("..")}) {
    m.tokenizer->set_files({{name, bytes, "test"}});
    const std::string path = dir.file("sub/crafted.baq");
    save_baq(path, *m.model, m.tokenizer.get(), nlohmann::json::object());
    const auto before = snapshot(dir.path());
    for (const char* cmd : {" info ", " generate "}) {
      const auto r = run_command(kBaq + cmd + path + (std::string(cmd) == " generate " ? " --prompt A -n 2" : ""));
      if (std::string(cmd) == " generate ") expect_refused(r, "not a plain file name");
      EXPECT_NE(r.output.find("not a plain file name"), std::string::npos) << r.output;
    }
    EXPECT_EQ(read_bytes(dir.file("victim.txt")), "precious");
    EXPECT_EQ(snapshot(dir.path()), before) << name;
  }
}

TEST_F(OutputSafety, SignalsRemoveTemporariesAndStaleOnesAreSwept) {
  // A temporary left by a process that no longer exists (as SIGKILL leaves it) is swept by the next
  // write of the same name; one of a live process is left alone.
  const pid_t dead = [] {
    const pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, nullptr, 0);
    return p;
  }();
  write_bytes(dir.file(".out.txt.baq-tmp." + std::to_string(dead)), "stale");
  write_bytes(dir.file(".out.txt.baq-tmp.1"), "pid 1 is alive");
  write_file_atomically(dir.file("out.txt"), "new");
  EXPECT_EQ(read_bytes(dir.file("out.txt")), "new");
  EXPECT_FALSE(fs::exists(dir.file(".out.txt.baq-tmp." + std::to_string(dead))));
  EXPECT_TRUE(fs::exists(dir.file(".out.txt.baq-tmp.1")));
  fs::remove(dir.file(".out.txt.baq-tmp.1"));

  // SIGTERM and SIGINT while an output is being written: the temporary goes, nothing is left.
  for (int sig : {SIGTERM, SIGINT}) {
    const std::string out = dir.file("slow.txt");
    const pid_t p = fork();
    if (p == 0) {
      install_signal_cleanup();
      write_file_atomically(out, [](std::ostream& o) {
        for (;;) {
          o << "x";
          o.flush();
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      });
      _exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    bool seen = false;
    for (const auto& e : fs::directory_iterator(dir.path())) seen = seen || e.path().filename().string().find(".slow.txt.baq-tmp.") == 0;
    EXPECT_TRUE(seen);
    kill(p, sig);
    int status = 0;
    waitpid(p, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status));
    for (const auto& e : fs::directory_iterator(dir.path()))
      EXPECT_EQ(e.path().filename().string().find(".slow.txt"), std::string::npos) << e.path();
    EXPECT_FALSE(fs::exists(out));
  }
}

}  // namespace
}  // namespace baq::test
