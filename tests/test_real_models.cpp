// Conformance on the real checkpoints in ../shared/models: the perplexities their READMEs give, and
// agreement between the two formats / two tokenizer implementations of the same model. Each test
// skips with a printed reason when the files are absent.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <regex>

#include <fmt/format.h>

#include "baq/calibrate.hpp"
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

namespace baq::test {
namespace {

// Issue 8's end-to-end run on stories260K: RTN, GPTQ and BAQ at 4 and 3 bits on 32 C4 windows of
// 256 tokens; every perplexity finite, GPTQ's layer proxy losses below RTN's, BAQ's summed proxy
// loss below GPTQ's at the same code budget, exact bits per weight.
TEST(EndToEnd, Stories260KRtnVsGptq) {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  REQUIRE_SHARED("data/c4/c4-sample-200.jsonl");
  const std::string model = S("models/stories260K/stories260K.bin"), tok = S("models/stories260K/tok512.bin");
  const LoadedModel fp = load_model(model, tok);
  const auto calib_tokens = fp.tokenizer->encode(read_text_file(S("data/c4/c4-sample-200.jsonl")), true);
  const auto calib = sample_calibration_windows(calib_tokens, 32, 256, 0);
  const auto eval_tokens = fp.tokenizer->encode(read_text_file(S("data/tinystories/val.txt")), true);
  PplOptions eval;
  eval.seqlen = 512;
  eval.max_windows = 48;
  KldResult self;
  const PplResult fp_ppl = evaluate_perplexity(*fp.model, eval_tokens, eval);
  std::printf("\n%-6s %4s %8s %10s %10s %8s\n", "method", "bits", "bpw", "ppl", "kld", "top1%");
  std::printf("%-6s %4s %8s %10.4f %10s %8s\n", "fp32", "32", "32", fp_ppl.perplexity(), "0", "100");
  for (int bits : {4, 3}) {
    std::vector<QuantizeRun> runs;
    for (auto method : {QuantMethod::Rtn, QuantMethod::Gptq}) {
      LoadedModel q = load_model(model, tok);
      QuantizeOptions o;
      o.method = method;
      o.settings.bits = bits;
      runs.push_back(quantize_model(*q.model, calib, 256, o));
      KldResult k;
      const PplResult r = evaluate_perplexity(*q.model, eval_tokens, eval, fp.model.get(), &k);
      EXPECT_TRUE(std::isfinite(r.perplexity()));
      EXPECT_GT(r.perplexity(), fp_ppl.perplexity() * 0.99);
      const double bpw = runs.back().bits_per_weight();
      // Per-row grids: codes as bit planes (4; or 2 + 1), bytes per row from the closed form
      // (128-column chunks whole, the rest dense), F16 min and max per row.
      auto plane = [](int64_t cols, int w) { return cols / 128 * 16 * w + (cols % 128 * w + 7) / 8; };
      double stored = 0;
      for (const auto& l : runs.back().layers)
        stored += l.rows * (bits == 4 ? plane(l.cols, 4) : plane(l.cols, 2) + plane(l.cols, 1)) * 8.0 + 32.0 * l.rows;
      EXPECT_DOUBLE_EQ(bpw, stored / runs.back().quantized_weights);
      std::printf("%-6s %4d %8.4f %10.4f %10.6f %8.3f\n", method_name(method), bits, bpw, r.perplexity(), k.kl_mean,
                  100 * k.top1_agreement);
    }
    {  // BAQ at the same code budget, allocation per layer
      LoadedModel q = load_model(model, tok);
      QuantizeOptions o;
      o.method = QuantMethod::Baq;
      o.rate = bits;
      runs.push_back(quantize_model(*q.model, calib, 256, o));
      KldResult k;
      const PplResult r = evaluate_perplexity(*q.model, eval_tokens, eval, fp.model.get(), &k);
      EXPECT_TRUE(std::isfinite(r.perplexity()));
      for (const auto& l : runs.back().layers) {  // the budget, to within 1/columns per layer
        EXPECT_LE(l.bits, bits + 1e-12) << l.name;
        EXPECT_GT(l.bits, bits - 1.0 / l.cols) << l.name;
      }
      std::printf("%-6s %4d %8.4f %10.4f %10.6f %8.3f   (code bits %.4f)\n", "baq", bits, runs.back().bits_per_weight(),
                  r.perplexity(), k.kl_mean, 100 * k.top1_agreement, runs.back().code_bits_per_weight());
    }
    const auto &rtn = runs[0], &gptq = runs[1], &baq = runs[2];
    ASSERT_EQ(rtn.layers.size(), gptq.layers.size());
    double gptq_sum = 0, baq_sum = 0;
    for (size_t i = 0; i < rtn.layers.size(); ++i) {
      EXPECT_LT(gptq.layers[i].proxy_loss, rtn.layers[i].proxy_loss) << gptq.layers[i].name << " at " << bits << " bits";
      gptq_sum += gptq.layers[i].proxy_loss;
      baq_sum += baq.layers[i].proxy_loss;
    }
    EXPECT_LT(baq_sum, gptq_sum) << bits << " bits";
  }
}

// The same model, seed and settings give byte-identical outputs whatever the thread count.
TEST(EndToEnd, QuantizeIsDeterministicAcrossThreadCounts) {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  REQUIRE_SHARED("data/c4/c4-sample-200.jsonl");
  TempDir dir;
  for (int threads : {1, 2}) {
    const auto r = run_command(fmt::format(
        "{} --threads {} quantize {} --tokenizer {} --calib {} --method gptq --bits 3 --group-size 32 --nsamples 16 "
        "--seqlen 128 --out {}",
        BAQ_BINARY, threads, S("models/stories260K/stories260K.bin"), S("models/stories260K/tok512.bin"),
        S("data/c4/c4-sample-200.jsonl"), dir.file(fmt::format("t{}", threads))));
    ASSERT_EQ(r.status, 0) << r.output;
    const auto p = run_command(fmt::format(
        "{} --threads {} quantize {} --tokenizer {} --calib {} --method baq --bits 3 --nsamples 16 --seqlen 128 --out {}",
        BAQ_BINARY, threads, S("models/stories260K/stories260K.bin"), S("models/stories260K/tok512.bin"),
        S("data/c4/c4-sample-200.jsonl"), dir.file(fmt::format("t{}.baq", threads))));
    ASSERT_EQ(p.status, 0) << p.output;
  }
  EXPECT_EQ(read_bytes(dir.file("t1/model.safetensors")), read_bytes(dir.file("t2/model.safetensors")));
  EXPECT_TRUE(read_bytes(dir.file("t1.baq")) == read_bytes(dir.file("t2.baq"))) << "the .baq differs with the thread count";
  EXPECT_EQ(read_bytes(dir.file("t1/tokenizer.bin")), read_bytes(S("models/stories260K/tok512.bin")));
  // Timings are the one part of a report allowed to differ: drop every "seconds" value.
  auto strip_seconds = [](const std::string& s) {
    std::string out;
    for (size_t pos = 0;;) {
      const size_t key = s.find("seconds\": ", pos);  // "seconds", "forward_seconds", …
      if (key == std::string::npos) return out + s.substr(pos);
      out += s.substr(pos, key - pos);
      pos = s.find_first_of(",\n}", key);
    }
  };
  const std::string a = read_bytes(dir.file("t1/report.json")), b = read_bytes(dir.file("t2/report.json"));
  EXPECT_NE(a.find("\"proxy_loss\""), std::string::npos);
  EXPECT_EQ(strip_seconds(a), strip_seconds(b));
  // The output folder is a model baq reads back (the llama2.c rotary layout survives).
  const LoadedModel q = load_model(dir.file("t1"), "");
  EXPECT_EQ(q.config.rope_style, RopeStyle::Interleaved);
  const auto tokens = q.tokenizer->encode(read_text_file(S("data/tinystories/val.txt")), true);
  PplOptions o;
  o.seqlen = 512;
  o.max_windows = 8;
  EXPECT_LT(evaluate_perplexity(*q.model, tokens, o).perplexity(), 20.0);
}


// stories260K.gguf: the same weights, token ids (from its embedded vocabulary) and perplexity as the
// llama2.c files of the same model.
TEST(Gguf, Stories260KMatchesTheLlama2cFiles) {
  if (!shared_has("models/stories260K/stories260K.gguf")) GTEST_SKIP() << "../shared stories260K.gguf is absent";
  const std::string dir = shared_dir() + "/models/stories260K/";
  const LoadedModel g = load_model(dir + "stories260K.gguf", "");
  const LoadedModel b = load_model(dir + "stories260K.bin", dir + "tok512.bin");
  EXPECT_EQ(g.format, "GGUF");
  // Same weights, tensor by tensor under the same (Hugging Face) names; the GGUF stores the tied head
  // separately.
  std::map<std::string, const Tensor*> gguf_tensors;
  for (const auto& [name, t] : g.model->tensors()) gguf_tensors[name] = t;
  for (const auto& [name, t] : b.model->tensors()) {
    ASSERT_TRUE(gguf_tensors.count(name)) << name;
    const Tensor gt = gguf_tensors[name]->to_f32(), bt = t->to_f32();
    ASSERT_EQ(gt.shape, bt.shape) << name;
    EXPECT_EQ(0, std::memcmp(gt.data, bt.data, static_cast<size_t>(bt.numel()) * 4)) << name;
  }
  const Tensor head = g.model->head().weight.to_f32();
  EXPECT_EQ(0, std::memcmp(head.data, b.model->embeddings().to_f32().data, static_cast<size_t>(head.numel()) * 4));
  // Same ids from the embedded vocabulary as from tok512.bin, and the same perplexity.
  const std::string text = read_text_file(shared_dir() + "/data/tinystories/val.txt");
  const auto ids = g.tokenizer->encode(text, true);
  EXPECT_EQ(ids, b.tokenizer->encode(text, true));
  PplOptions o;
  o.seqlen = 512;
  o.max_windows = 128;
  EXPECT_NEAR(evaluate_perplexity(*g.model, ids, o).perplexity(), 4.004450, 4.004450 * 1e-5);
  // A quantized GGUF model carries its tokenizer as a llama2.c file (and a tokenizer_config.json of its
  // BOS, EOS and special tokens) that reads back to the same ids.
  const auto files = g.tokenizer->files();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].name, "tokenizer.bin");
  EXPECT_EQ(files[1].name, "tokenizer_config.json");
  const auto back = open_tokenizer(files, 512, {});
  EXPECT_EQ(back->encode(text.substr(0, 20000), true), std::vector<int>(b.tokenizer->encode(text.substr(0, 20000), true)));
}

}  // namespace
}  // namespace baq::test

namespace baq::test {
namespace {

// The Llama-2 vocabulary as a Hugging Face tokenizer.json (merges by rank, byte fallback, added chat
// tokens) gives SentencePiece's ids on every shared text file; added tokens are single tokens.
TEST(Tokenizers, LlamaTokenizerJsonAgreesWithSentencePiece) {
  REQUIRE_SHARED("models/tokenizers/llama-hf/tokenizer.json");
  REQUIRE_SHARED("models/llama2-tokenizer.model");
  const auto json = open_tokenizer(S("models/tokenizers/llama-hf/tokenizer.json"), "", 0, {1, {2}});
  SentencePieceTokenizer sp(S("models/llama2-tokenizer.model"));
  // Its tokenizer_config.json (Phi-3's) adds no BOS; SentencePiece's default does.
  EXPECT_FALSE(json->adds_bos());
  EXPECT_TRUE(sp.adds_bos());
  const std::string mixed = "Hello, World! Ça va? naïve café — 😀🚀 digits 12345,\n\n  two spaces,\tand a tab.   end";
  EXPECT_EQ(json->encode(mixed, false), sp.encode(mixed, false));
  for (const std::string t : {"data/wikitext2-raw/test.txt", "data/wikitext2-raw/valid.txt", "data/ptb/test.txt",
                              "data/ptb/valid.txt", "data/tinystories/val.txt",
                              "data/kdoc/val.txt", "data/tinyshakespeare.txt", "data/c4/c4-sample-200.jsonl"}) {
    REQUIRE_SHARED(t);
    const std::string text = read_bytes(S(t));
    EXPECT_EQ(json->encode(text, false), sp.encode(text, false)) << t;
  }
  const auto ids = json->encode("<|user|>\nHi<|end|>", true, /*parse_special=*/true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], 32010);
  EXPECT_EQ(ids.back(), 32007);
  EXPECT_EQ(json->decode(32010), "<|user|>");
}

}  // namespace
}  // namespace baq::test

namespace baq::test {
namespace {

// hf-random-tiny-llama/pytorch_model.bin, written by transformers 4.20. Golden values were computed
// once, independently of baq, with Python's zipfile + a pickle.Unpickler whose find_class returns
// inert stand-ins: per tensor the fsum of its F32 values, the first and the last value.
TEST(TorchBin, HfRandomTinyLlamaMatchesGoldenValuesAndItsSafetensorsCopy) {
  REQUIRE_SHARED("models/hf-random-tiny-llama/pytorch_model.bin");
  const std::string dir = S("models/hf-random-tiny-llama");
  const LoadedModel m = load_model(dir, "", false);
  EXPECT_EQ(m.format, "Hugging Face pytorch_model.bin");
  struct Golden {
    const char* name;
    std::vector<int64_t> shape;
    double sum, first, last;
  };
  const std::vector<Golden> golden = {
      {"model.embed_tokens.weight", {32000, 16}, -1.86214252, 0, 0.00322929118},
      {"model.layers.0.self_attn.q_proj.weight", {16, 16}, -0.253244406, -0.0144042382, 0.00842524972},
      {"model.layers.0.self_attn.k_proj.weight", {16, 16}, 0.0624623594, -0.0124793872, 0.0260216631},
      {"model.layers.0.self_attn.v_proj.weight", {16, 16}, 0.39604174, -0.0195208285, 0.014250081},
      {"model.layers.0.self_attn.o_proj.weight", {16, 16}, -0.207583117, -0.0070211417, -0.0151065998},
      {"model.layers.0.self_attn.rotary_emb.inv_freq", {2}, 1.01, 1, 0.00999999978},
      {"model.layers.0.mlp.gate_proj.weight", {64, 16}, -1.43356437, 0.0169250909, 0.0328091159},
      {"model.layers.0.mlp.down_proj.weight", {16, 64}, -0.216902398, 0.0285983179, 0.0535527878},
      {"model.layers.0.mlp.up_proj.weight", {64, 16}, 0.735809395, 0.00820655748, -0.02868912},
      {"model.layers.0.input_layernorm.weight", {16}, 16, 1, 1},
      {"model.layers.0.post_attention_layernorm.weight", {16}, 16, 1, 1},
      {"model.norm.weight", {16}, 16, 1, 1},
      {"lm_head.weight", {32000, 16}, -13.9631427, 0.0264852215, -0.00214927248},
  };
  ASSERT_EQ(m.source->tensors().size(), golden.size());
  std::vector<Tensor> loaded;
  std::vector<std::pair<std::string, const Tensor*>> named;
  loaded.reserve(golden.size());
  for (const Golden& g : golden) {
    SCOPED_TRACE(g.name);
    loaded.push_back(m.source->load(g.name));
    const Tensor& t = loaded.back();
    ASSERT_EQ(t.shape, g.shape);
    double sum = 0;
    for (float v : t.span()) sum += v;
    EXPECT_NEAR(sum, g.sum, 1e-6 * std::max(1.0, std::abs(g.sum)));
    EXPECT_FLOAT_EQ(t.data[0], static_cast<float>(g.first));
    EXPECT_FLOAT_EQ(t.data[t.numel() - 1], static_cast<float>(g.last));
    named.emplace_back(g.name, &t);
  }

  // The same weights as safetensors: the forward through both loaders agrees to the bit.
  TempDir tmp;
  std::filesystem::copy(dir + "/config.json", tmp.file("config.json"));
  write_safetensors(tmp.file("model.safetensors"), named);
  const LoadedModel st = load_model(tmp.path().string(), "", false);
  auto tok = open_tokenizer(S("models/llama2-tokenizer.model"), "", 32000, {1, {2}});
  std::vector<int> ids = tok->encode(read_text_file(S("data/tinyshakespeare.txt")).substr(0, 400), true);
  ids.resize(std::min<size_t>(ids.size(), 64));
  const auto rows = static_cast<int64_t>(ids.size());
  std::vector<float> ha(static_cast<size_t>(rows * 16)), hb(ha.size());
  m.model->forward(ids, BatchShape{1, static_cast<int>(rows)}, ha.data());
  st.model->forward(ids, BatchShape{1, static_cast<int>(rows)}, hb.data());
  std::vector<float> la(static_cast<size_t>(rows * 32000)), lb(la.size());
  m.model->logits(ha.data(), rows, la.data());
  st.model->logits(hb.data(), rows, lb.data());
  EXPECT_EQ(la, lb);
  // Random weights: the prediction is near uniform over the 32000 tokens.
  EXPECT_NEAR(ppl(load_model(dir, S("models/llama2-tokenizer.model")), S("data/tinyshakespeare.txt"),
                  PplProtocol::Windows, 128, 4).perplexity(),
              32000, 2000);
}

}  // namespace
}  // namespace baq::test
