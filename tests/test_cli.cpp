// The baq binary end to end on tiny models: output lines, exit codes and one-line errors.
#include <gtest/gtest.h>

#include "test_util.hpp"

namespace baq::test {
namespace {

const std::string kBaq = BAQ_BINARY;

int count_lines(const std::string& s) {
  int n = 0;
  for (char ch : s) n += ch == '\n';
  return n;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    c = small_llama(16, 24, 2, 2, 1, 300, 32, true);
    random_weights(c, 21, w, s);
    write_llama2c(dir.file("model.bin"), c, w);
    // A tokenizer of 300 pieces: specials, bytes, " " and some capital letters.
    std::vector<std::pair<std::string, float>> extra = {{" ", 0.0f}};
    for (int i = 260; i < 300; ++i) extra.emplace_back(std::string(1, static_cast<char>('A' + (i - 260))), 0.0f);
    write_llama2c_tokenizer(dir.file("tok.bin"), extra);
    std::string text;
    for (int i = 0; i < 40; ++i) text += "The quick brown fox jumps over the lazy dog. ";
    write_bytes(dir.file("text.txt"), text);
  }
  ModelConfig c;
  Weights w;
  Shapes s;
  TempDir dir;
};

TEST_F(Cli, PplPrintsProtocolCountsAndValue) {
  const auto r = run_command(kBaq + " ppl " + dir.file("model.bin") + " --tokenizer " + dir.file("tok.bin") +
                             " --text " + dir.file("text.txt") + " --seqlen 16 --protocol stream");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("protocol stream  seqlen 16"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\nppl "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stderr"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokens/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("peak memory"), std::string::npos) << r.output;
}

TEST_F(Cli, InfoDescribesTheModel) {
  const auto r = run_command(kBaq + " info " + dir.file("model.bin"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("llama2.c"), std::string::npos);
  EXPECT_NE(r.output.find("2 layers, dim 16, ffn 24, heads 2 / kv heads 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("mlp.down   [16 x 24]"), std::string::npos) << r.output;
}

TEST_F(Cli, BadInputGivesOneLineAndNonZeroExit) {
  write_bytes(dir.file("empty.txt"), "");
  write_bytes(dir.file("trunc.bin"), read_bytes(dir.file("model.bin")).substr(0, 1000));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {" ppl " + dir.file("model.bin") + " --tokenizer " + dir.file("tok.bin") + " --text " + dir.file("empty.txt"),
       "empty.txt: empty text"},
      {" ppl " + dir.file("trunc.bin") + " --tokenizer " + dir.file("tok.bin") + " --text " + dir.file("text.txt"),
       "trunc.bin: "},
      {" ppl " + dir.file("model.bin") + " --text " + dir.file("text.txt") + " --tokenizer " + dir.file("nope.model"),
       "nope.model: cannot open"},
      {" info " + dir.file("missing"), "missing: no such file"},
      {" ppl " + dir.file("model.bin") + " --tokenizer " + dir.file("tok.bin") + " --text " + dir.file("text.txt") +
           " --seqlen 64",
       "exceeds the model's context"},
  };
  for (const auto& [args, fragment] : cases) {
    const auto r = run_command(kBaq + args);
    EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
    EXPECT_EQ(count_lines(r.output), 1) << r.output;
    EXPECT_EQ(r.output.rfind("baq: error: ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find(fragment), std::string::npos) << r.output;
  }
  const auto usage = run_command(kBaq + " ppl " + dir.file("model.bin"));  // --text missing
  EXPECT_NE(usage.status, 0);
  EXPECT_NE(usage.output.find("--text"), std::string::npos);
}

}  // namespace
}  // namespace baq::test
