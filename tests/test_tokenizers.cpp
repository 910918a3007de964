// Tokenizers against ids written out by hand from each format's rules, and against the reference
// test vectors llama.cpp ships for the GPT-2 and OPT (RoBERTa) vocabularies.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "baq/error.hpp"
#include "baq/tokenizer.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

class Llama2cTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // ids:           259   260   261   262   263    264    265    266    267
    write_llama2c_tokenizer(dir.file("tok.bin"), {{" ", -10}, {"a", -5}, {"b", -5}, {"c", -5}, {"ab", 3},
                                                  {"bc", 5}, {" a", 1}, {"ba", 3}, {"é", -5}});
    tok = std::make_unique<Llama2cTokenizer>(dir.file("tok.bin"), 0);
  }
  TempDir dir;
  std::unique_ptr<Llama2cTokenizer> tok;
};

TEST_F(Llama2cTokenizerTest, BestScoreMergesFirst) {
  // " abc": pairs " a"(1) ab(3) bc(5) -> bc first, then " a" -> [" a", "bc"]
  EXPECT_EQ(tok->encode("abc", true), (std::vector<int>{1, 265, 264}));
  EXPECT_EQ(tok->encode("abc", false), (std::vector<int>{265, 264}));
}

TEST_F(Llama2cTokenizerTest, TiesGoToTheLeftmostPair) {
  // " aba": " a"(1) ab(3) ba(3): the tie goes to ab, leaving [" ", "ab", "a"]
  EXPECT_EQ(tok->encode("aba", false), (std::vector<int>{259, 263, 260}));
}

TEST_F(Llama2cTokenizerTest, ByteFallbackForUnknownCodePoints) {
  // é is a piece; ü (C3 BC) and 😀 (F0 9F 98 80) fall back to byte ids (byte + 3); 7 is '7' + 3.
  EXPECT_EQ(tok->encode("é", false), (std::vector<int>{259, 267}));
  EXPECT_EQ(tok->encode("ü", false), (std::vector<int>{259, 0xC3 + 3, 0xBC + 3}));
  EXPECT_EQ(tok->encode("😀7", false), (std::vector<int>{259, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3, '7' + 3}));
  // A run of spaces stays spaces: " " pieces, and " a" merges only at the end of the run.
  EXPECT_EQ(tok->encode("  a", false), (std::vector<int>{259, 259, 265}));
  EXPECT_EQ(tok->encode("", true), (std::vector<int>{1}));
  EXPECT_EQ(tok->decode(0xC3 + 3), "\xC3");
  EXPECT_EQ(tok->decode(264), "bc");
}

TEST_F(Llama2cTokenizerTest, TruncatedFileFails) {
  const std::string bytes = read_bytes(dir.file("tok.bin"));
  write_bytes(dir.file("short.bin"), bytes.substr(0, bytes.size() - 3));
  EXPECT_THROW(Llama2cTokenizer(dir.file("short.bin"), 268), Error);
  try {
    Llama2cTokenizer t(dir.file("short.bin"), 268);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("short.bin: truncated"), std::string::npos) << e.what();
  }
}

TEST(ByteLevelBpe, HandWrittenVocabulary) {
  ByteLevelBpeTokenizer::Spec spec;
  spec.source = "test";
  // Ġ is the mapped space (U+0120); merges by rank: h e, l l, he ll, hell o, Ġ w, 1 2
  spec.vocab = {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"Ġ", 4}, {"he", 5}, {"ll", 6}, {"hell", 7},
                {"hello", 8}, {"Ġw", 9}, {"w", 10}, {"1", 11}, {"2", 12}, {"12", 13}, {"!", 14}, {"Ċ", 15},
                {"ĠĠ", 16}, {"Ã", 17}, {"©", 18}, {"<|endoftext|>", 19}};
  spec.merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"1", "2"}, {"Ġ", "Ġ"}};
  spec.added_tokens = {{"<|endoftext|>", 19}};
  spec.pattern = ByteLevelBpeTokenizer::gpt2_pattern();
  ByteLevelBpeTokenizer tok(spec);
  // "hello" merges fully; " w" is one pre-token; digits split from letters; "!" is punctuation.
  EXPECT_EQ(tok.encode("hello w", false), (std::vector<int>{8, 9}));
  EXPECT_EQ(tok.encode("hello12!", false), (std::vector<int>{8, 13, 14}));
  // "\n" maps to Ċ; a run of three spaces before a word: "  " (\s+(?!\S)) then " w".
  EXPECT_EQ(tok.encode("\n   w", false), (std::vector<int>{15, 16, 9}));
  // é is C3 A9: bytes map to Ã and ©.
  EXPECT_EQ(tok.encode("é", false), (std::vector<int>{17, 18}));
  EXPECT_EQ(tok.encode("he<|endoftext|>lo", false), (std::vector<int>{5, 19, 2, 3}));
  EXPECT_EQ(tok.decode(9), " w");
  EXPECT_EQ(tok.decode(17) + tok.decode(18), "é");
}

// llama.cpp's vectors: strings separated by "\n__ggml_vocab_test__\n", ids one line per string.
void check_vectors(const Tokenizer& tok, const std::string& name) {
  const std::string base = shared_dir() + "/models/tokenizers/testvectors/" + name;
  const std::string inp = read_bytes(base + ".inp");
  std::vector<std::string> texts;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(sep, pos);
    if (next == std::string::npos) break;
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(base + ".out");
  std::string line;
  size_t i = 0;
  for (; std::getline(out, line) && i < texts.size(); ++i) {
    std::vector<int> expected;
    std::istringstream ss(line);
    for (int id; ss >> id;) expected.push_back(id);
    EXPECT_EQ(tok.encode(texts[i], false), expected) << name << " string " << i << ": '" << texts[i] << "'";
  }
  EXPECT_EQ(i, texts.size());
  EXPECT_GT(texts.size(), 40u);
}

TEST(ByteLevelBpe, Gpt2MatchesLlamaCppVectors) {
  if (!shared_has("models/tokenizers/gpt2/vocab.json")) GTEST_SKIP() << "shared/models/tokenizers/gpt2 absent";
  const std::string dir = shared_dir() + "/models/tokenizers/gpt2/";
  auto tok = ByteLevelBpeTokenizer::from_vocab_merges(dir + "vocab.json", dir + "merges.txt", -1, 50256);
  EXPECT_EQ(tok->vocab_size(), 50257);
  check_vectors(*tok, "ggml-vocab-gpt-2.gguf");
}

// The same GPT-2 vocabulary as a Hugging Face tokenizer.json (merges in both of the format's
// spellings, an added special token) must give the same ids.
TEST(ByteLevelBpe, TokenizerJsonMatchesLlamaCppVectors) {
  if (!shared_has("models/tokenizers/gpt2/vocab.json")) GTEST_SKIP() << "shared/models/tokenizers/gpt2 absent";
  const std::string dir = shared_dir() + "/models/tokenizers/gpt2/";
  nlohmann::json j;
  j["model"]["type"] = "BPE";
  j["model"]["vocab"] = nlohmann::json::parse(read_bytes(dir + "vocab.json"));
  auto& merges = j["model"]["merges"] = nlohmann::json::array();
  std::istringstream lines(read_bytes(dir + "merges.txt"));
  std::string line;
  for (int i = 0; std::getline(lines, line); ++i) {
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t sp = line.find(' ');
    if (i % 2) merges.push_back(line);
    else merges.push_back({line.substr(0, sp), line.substr(sp + 1)});
  }
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["added_tokens"] = {{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}};
  TempDir tmp;
  write_bytes(tmp.file("tokenizer.json"), j.dump());
  const auto tok = open_tokenizer("", tmp.path().string(), 50257, -1, 50256);
  EXPECT_NE(tok->describe().find("tokenizer.json"), std::string::npos);
  check_vectors(*tok, "ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(tok->encode("a<|endoftext|>", false), (std::vector<int>{64, 50256}));
  j["model"]["byte_fallback"] = true;
  write_bytes(tmp.file("tokenizer.json"), j.dump());
  EXPECT_THROW(open_tokenizer("", tmp.path().string(), 50257, -1, 50256), Error);
}

TEST(ByteLevelBpe, OptMatchesLlamaCppVectorsAndPrependsEosAsBos) {
  if (!shared_has("models/tokenizers/opt/vocab.json")) GTEST_SKIP() << "shared/models/tokenizers/opt absent";
  const std::string dir = shared_dir() + "/models/tokenizers/opt/";
  auto tok = ByteLevelBpeTokenizer::from_vocab_merges(dir + "vocab.json", dir + "merges.txt", 2, 2);
  check_vectors(*tok, "ggml-vocab-roberta-bpe.gguf");
  const auto ids = tok->encode("Hello world", true);
  EXPECT_EQ(ids, (std::vector<int>{2, 31414, 232}));
}

// The same vocabulary through libsentencepiece and through the llama2.c tokenizer.bin reader.
TEST(SentencePiece, AgreesWithLlama2cOnMixedText) {
  const std::string mixed =
      "Hello, World! Ça va? naïve café — 😀🚀 emoji, digits 12345 and 3.14159,\n\n  two spaces,\tand a tab.   "
      "Three spaces.\nΑθήνα 東京 Zürich\r\nend";
  for (const auto& [model, bin] : {std::pair<std::string, std::string>{"models/kdoc-6.8M/hf/tokenizer.model",
                                                                       "models/kdoc-6.8M/llama2c/tokenizer.bin"},
                                   {"models/llama2-tokenizer.model", "models/llama2-tokenizer.bin"}}) {
    if (!shared_has(model) || !shared_has(bin)) GTEST_SKIP() << model << " absent";
    SentencePieceTokenizer sp(shared_dir() + "/" + model);
    Llama2cTokenizer l2(shared_dir() + "/" + bin, sp.vocab_size());
    const auto ids = sp.encode(mixed, true);
    EXPECT_EQ(ids, l2.encode(mixed, true)) << model;
    EXPECT_GT(ids.size(), 40u);
    EXPECT_EQ(ids[0], 1);
  }
}

}  // namespace
}  // namespace baq::test
