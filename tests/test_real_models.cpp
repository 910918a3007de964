// Conformance on the real checkpoints in ../shared/models: the perplexities their READMEs give, and
// agreement between the two formats / two tokenizer implementations of the same model. Each test
// skips with a printed reason when the files are absent.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>

#include "baq/io.hpp"
#include "baq/perplexity.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

#define REQUIRE_SHARED(path) \
  if (!shared_has(path)) GTEST_SKIP() << "../shared/" << (path) << " is absent"

std::string S(const std::string& rel) { return shared_dir() + "/" + rel; }

PplResult ppl(const LoadedModel& m, const std::string& text_file, PplProtocol protocol, int seqlen,
              int64_t max_windows = 0) {
  const auto tokens = m.tokenizer->encode(read_text_file(text_file), true);
  PplOptions o;
  o.protocol = protocol;
  o.seqlen = seqlen;
  o.max_windows = max_windows;
  return evaluate_perplexity(*m.model, tokens, o);
}

TEST(Stories260K, StreamProtocolThroughTheCli) {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const auto r = run_command(std::string(BAQ_BINARY) + " ppl " + S("models/stories260K/stories260K.bin") +
                             " --tokenizer " + S("models/stories260K/tok512.bin") + " --text " +
                             S("data/tinystories/val.txt") + " --protocol stream --seqlen 512");
  ASSERT_EQ(r.status, 0) << r.output;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(r.output, match, std::regex("\nppl ([0-9.]+)"))) << r.output;
  EXPECT_NEAR(std::stod(match[1]), 5.048621, 5.048621 * 1e-4);
  EXPECT_NE(r.output.find("text tokens 393019  predicted tokens 393018"), std::string::npos) << r.output;
}

TEST(Stories260K, WindowsProtocol) {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const LoadedModel m = load_model(S("models/stories260K/stories260K.bin"), S("models/stories260K/tok512.bin"));
  EXPECT_EQ(m.config.dim, 64);
  EXPECT_EQ(m.config.hidden_dim, 172);
  EXPECT_EQ(m.config.n_kv_heads, 4);
  EXPECT_TRUE(m.config.tied_embeddings);
  const PplResult full = ppl(m, S("data/tinystories/val.txt"), PplProtocol::Windows, 512);
  EXPECT_EQ(full.predicted, 391937);
  EXPECT_NEAR(full.mean_nll, 1.619025, 2e-6);
  EXPECT_NEAR(full.perplexity(), 5.048164, 5.048164 * 1e-4);
  const PplResult first = ppl(m, S("data/tinystories/val.txt"), PplProtocol::Windows, 512, 128);
  EXPECT_EQ(first.predicted, 65408);
  EXPECT_NEAR(first.perplexity(), 4.004450, 4.004450 * 1e-4);
}

// The HF folder (BF16 safetensors, SentencePiece, rotate-half q/k rows, untied head) and the llama2.c
// export of the same weights: same ids, same perplexity, equal to the README's value.
TEST(Kdoc, HuggingFaceAndLlama2cAgree) {
  REQUIRE_SHARED("models/kdoc-6.8M/hf/model.safetensors");
  REQUIRE_SHARED("models/kdoc-6.8M/llama2c/model.bin");
  const LoadedModel hf = load_model(S("models/kdoc-6.8M/hf"), "");
  const LoadedModel l2 = load_model(S("models/kdoc-6.8M/llama2c/model.bin"), "");
  EXPECT_FALSE(hf.config.tied_embeddings);
  EXPECT_EQ(hf.config.rope_style, RopeStyle::RotateHalf);
  EXPECT_EQ(l2.config.rope_style, RopeStyle::Interleaved);
  const std::string text = read_text_file(S("data/kdoc/val.txt"));
  const auto ids_hf = hf.tokenizer->encode(text, true);
  EXPECT_EQ(ids_hf.size(), 71504u);
  EXPECT_EQ(ids_hf, l2.tokenizer->encode(text, true));
  PplOptions o;
  o.seqlen = 256;
  const PplResult a = evaluate_perplexity(*hf.model, ids_hf, o);
  const PplResult b = evaluate_perplexity(*l2.model, ids_hf, o);
  EXPECT_EQ(a.predicted, 71145);
  EXPECT_NEAR(a.perplexity(), 89.799782, 89.799782 * 1e-5);
  EXPECT_NEAR(b.perplexity(), a.perplexity(), a.perplexity() * 1e-5);
  o.protocol = PplProtocol::Stream;
  o.max_windows = 16;
  const PplResult s = evaluate_perplexity(*hf.model, ids_hf, o);
  EXPECT_EQ(s.predicted, 16 * 256);
  o.protocol = PplProtocol::Windows;
  const PplResult w16 = evaluate_perplexity(*l2.model, ids_hf, o);
  EXPECT_EQ(w16.predicted, 4080);
  EXPECT_NEAR(w16.perplexity(), 97.828370, 97.828370 * 1e-5);
}

TEST(Kdoc, StreamProtocolMatchesReadme) {
  REQUIRE_SHARED("models/kdoc-6.8M/llama2c/model.bin");
  const LoadedModel m = load_model(S("models/kdoc-6.8M/llama2c/model.bin"), "");
  const PplResult r = ppl(m, S("data/kdoc/val.txt"), PplProtocol::Stream, 256);
  EXPECT_EQ(r.predicted, 71503);
  EXPECT_NEAR(r.perplexity(), 89.820664, 89.820664 * 1e-5);
}

// libsentencepiece and the llama2.c tokenizer.bin reader give identical ids on every shared text.
TEST(Tokenizers, SentencePieceAndLlama2cAgreeOnEveryTextFile) {
  const std::vector<std::string> texts = {"data/wikitext2-raw/test.txt", "data/wikitext2-raw/valid.txt",
                                          "data/c4/c4-sample-200.jsonl", "data/ptb/test.txt",
                                          "data/ptb/valid.txt",          "data/tinystories/val.txt",
                                          "data/kdoc/val.txt",           "data/tinyshakespeare.txt"};
  for (const auto& [model, bin] : {std::pair<std::string, std::string>{"models/kdoc-6.8M/hf/tokenizer.model",
                                                                       "models/kdoc-6.8M/llama2c/tokenizer.bin"},
                                   {"models/llama2-tokenizer.model", "models/llama2-tokenizer.bin"}}) {
    REQUIRE_SHARED(model);
    REQUIRE_SHARED(bin);
    SentencePieceTokenizer sp(S(model));
    Llama2cTokenizer l2(S(bin), sp.vocab_size());
    for (const auto& t : texts) {
      REQUIRE_SHARED(t);
      // .jsonl is compared on its raw bytes too: the tokenizers must agree on any text.
      const std::string text = read_bytes(S(t));
      const auto a = sp.encode(text, true);
      EXPECT_EQ(a, l2.encode(text, true)) << model << " on " << t;
      EXPECT_GT(a.size(), text.size() / 8) << t;
    }
  }
}

}  // namespace
}  // namespace baq::test
