// Reader conformance: well-formed files read exactly; every malformed case fails with one clear
// line naming the file and the problem.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <vector>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/perplexity.hpp"
#include "baq/model.hpp"
#include "baq/tensor.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

std::string f32_bytes(std::initializer_list<float> values) {
  std::string s;
  for (float v : values) s.append(reinterpret_cast<const char*>(&v), 4);
  return s;
}

TEST(Safetensors, ReadsF32F16BF16Values) {
  TempDir dir;
  std::string data = f32_bytes({1.0f, -2.5f});
  for (uint16_t h : {uint16_t{0x3C00}, uint16_t{0xC000}, uint16_t{0x7BFF}, uint16_t{0x0001}}) data.append(reinterpret_cast<const char*>(&h), 2);
  for (uint16_t h : {uint16_t{0x3F80}, uint16_t{0xC0A0}}) data.append(reinterpret_cast<const char*>(&h), 2);
  write_raw_safetensors(dir.file("a.safetensors"),
                        R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("h":{"dtype":"F16","shape":[2,2],"data_offsets":[8,16]},)"
                        R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]}})",
                        data);
  SafetensorsReader r(dir.file("a.safetensors"));
  ASSERT_EQ(r.tensors().size(), 3u);
  const Tensor a = r.load("a"), h = r.load("h"), b = r.load("b");
  EXPECT_EQ(a.span()[0], 1.0f);
  EXPECT_EQ(a.span()[1], -2.5f);
  EXPECT_EQ(h.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(h.span()[0], 1.0f);
  EXPECT_EQ(h.span()[1], -2.0f);
  EXPECT_EQ(h.span()[2], 65504.0f);                  // largest F16
  EXPECT_EQ(h.span()[3], std::ldexp(1.0f, -24));     // smallest subnormal F16
  EXPECT_EQ(b.span()[0], 1.0f);
  EXPECT_EQ(b.span()[1], -5.0f);
}

TEST(Safetensors, MalformedFilesFailClearly) {
  TempDir dir;
  const std::string p = dir.file("bad.safetensors");
  auto open = [&] { SafetensorsReader r(p); };
  write_bytes(p, "abc");
  expect_error(open, {p, "truncated"});
  write_bytes(p, std::string("\xff\xff\xff\x00\x00\x00\x00\x00", 8) + "{}");
  expect_error(open, {p, "header length"});
  write_raw_safetensors(p, R"({"a": {"dtype": "F32", )", "");
  expect_error(open, {p, "not valid JSON"});
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32_bytes({1, 2}));
  expect_error(open, {p, "'a'", "outside"});
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32_bytes({1, 2}));
  expect_error(open, {p, "'a'", "needs 12"});
  write_raw_safetensors(p, R"({"a":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})", f32_bytes({1, 2}));
  expect_error(open, {p, "'a'", "unsupported dtype 'I8'"});
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32_bytes({1, 2}));
  expect_error(open, {p, "'a'", "negative"});
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[2]}})", f32_bytes({1, 2}));
  expect_error(open, {p, "'a'", "data_offsets"});
  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", f32_bytes({1, 2}));
  expect_error(open, {p, "'a'", "overflows"});

  write_raw_safetensors(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, NAN}));
  SafetensorsReader r(p);
  EXPECT_EQ(r.load("a").first_non_finite(), 1);  // viewed as stored; NaN is found where values are used
  expect_error([&] { r.load("b"); }, {p, "missing tensor 'b'"});
}

// The non-finite scan reports the first bad value's index wherever it falls (first value, either side
// of the scan's 16384-value chunks, the last), with a later bad value present too, for F32, double
// and the half-precision exponent tests; −1 on clean data.
TEST(Tensor, FirstNonFiniteFindsTheFirstBadValue) {
  for (int64_t n : {1, 16383, 16384, 16385, 70001}) {
    std::vector<float> f(static_cast<size_t>(n), 0.5f);
    std::vector<double> d(static_cast<size_t>(n), -2.0);
    EXPECT_EQ(first_non_finite(f.data(), n), -1);
    EXPECT_EQ(first_non_finite(d.data(), n), -1);
    for (int64_t at : {int64_t{0}, int64_t{16383}, int64_t{16384}, n - 1}) {
      if (at >= n) continue;
      std::vector<float> fb = f;
      std::vector<double> db = d;
      fb[static_cast<size_t>(at)] = at % 2 == 0 ? NAN : -INFINITY;
      db[static_cast<size_t>(at)] = at % 2 == 0 ? INFINITY : NAN;
      fb.back() = NAN, db.back() = NAN;  // a later one does not hide it
      EXPECT_EQ(first_non_finite(fb.data(), n), at) << n << " " << at;
      EXPECT_EQ(first_non_finite(db.data(), n), at) << n << " " << at;
      std::vector<uint16_t> half(static_cast<size_t>(n), 0x3c00);  // 1.0 in F16; 0x3c00 is finite in BF16 too
      half[static_cast<size_t>(at)] = 0x7f80 | 0x0001;                // BF16 NaN, also an F16 NaN (exponent 0x7c00 set)
      Tensor t;
      t.shape = {n};
      t.raw = half.data();
      t.dtype = DType::BF16;
      EXPECT_EQ(t.first_non_finite(), at);
      t.dtype = DType::F16;
      EXPECT_EQ(t.first_non_finite(), at);
      half[static_cast<size_t>(at)] = 0x7800;  // 32768 in F16, 2^113 in BF16: finite in both
      EXPECT_EQ(t.first_non_finite(), -1);
    }
  }
}

class ModelFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    c = small_llama(16, 24, 1, 2, 1, 10, 8, false);
    random_weights(c, 7, w, s);
  }
  ModelConfig c;
  Weights w;
  Shapes s;
  TempDir dir;
};

TEST_F(ModelFolder, MissingTensorIsNamed) {
  w.erase("model.layers.0.mlp.up_proj.weight");
  write_hf_folder(dir.path(), c, w, s);
  expect_error([&] { load_model(dir.path().string(), "", false); }, {"model.safetensors", "missing tensor 'model.layers.0.mlp.up_proj.weight'"});
}

TEST_F(ModelFolder, WrongShapeIsNamed) {
  s["model.layers.0.self_attn.k_proj.weight"] = {16, 8};  // should be [8, 16]
  write_hf_folder(dir.path(), c, w, s);
  expect_error([&] { load_model(dir.path().string(), "", false); }, {"'model.layers.0.self_attn.k_proj.weight'", "shape [16, 8], expected [8, 16]"});
}

TEST_F(ModelFolder, NanWeightIsNamed) {
  // Weights stay mapped and unread until used: a NaN is named by what uses it (perplexity here; the
  // quantizer names it when it converts a block), not by reading the whole file at load.
  w["model.layers.0.mlp.down_proj.weight"][5] = NAN;
  write_hf_folder(dir.path(), c, w, s);
  const LoadedModel m = load_model(dir.path().string(), "", false);
  std::vector<int> tokens(20, 3);
  PplOptions o;
  o.seqlen = 8;
  expect_error([&] { evaluate_perplexity(*m.model, tokens, o); }, {"'model.layers.0.mlp.down_proj.weight'", "non-finite"});
  // A norm (converted at load, being small) is named at load.
  w["model.layers.0.mlp.down_proj.weight"][5] = 0.5;
  w["model.norm.weight"][1] = INFINITY;
  write_hf_folder(dir.path(), c, w, s);
  expect_error([&] { load_model(dir.path().string(), "", false); }, {"model.safetensors", "'model.norm.weight'", "non-finite"});
}

TEST_F(ModelFolder, UnknownArchitectureAndBadConfig) {
  write_hf_folder(dir.path(), c, w, s);
  auto cfg = nlohmann::json::parse(baq::hf_config_json(c));
  cfg["architectures"] = {"GPTNeoXForCausalLM"};
  write_bytes(dir.file("config.json"), cfg.dump());
  expect_error([&] { load_model(dir.path().string(), "", false); }, {"config.json", "unknown architecture 'GPTNeoXForCausalLM'"});
  write_bytes(dir.file("config.json"), "{\"architectures\": [\"LlamaForCausalLM\"");
  expect_error([&] { load_model(dir.path().string(), "", false); }, {"config.json", "not valid JSON"});
  cfg = nlohmann::json::parse(baq::hf_config_json(c));
  cfg["num_attention_heads"] = 3;
  cfg.erase("head_dim");
  write_bytes(dir.file("config.json"), cfg.dump());
  expect_error([&] { load_model(dir.path().string(), "", false); }, {"config.json", "not a multiple"});
  cfg = nlohmann::json::parse(baq::hf_config_json(c));
  cfg.erase("hidden_size");
  write_bytes(dir.file("config.json"), cfg.dump());
  expect_error([&] { load_model(dir.path().string(), "", false); }, {"config.json", "missing field 'hidden_size'"});
}

TEST_F(ModelFolder, ShardedCheckpointReadsLikeOneFile) {
  write_hf_folder(dir.path(), c, w, s);
  // Split the tensors over two shards with an index.
  Weights first, second;
  Shapes s1, s2;
  int i = 0;
  for (const auto& [name, v] : w) ((i++ % 2) ? first : second)[name] = v;
  for (const auto& [name, v] : first) s1[name] = s.at(name);
  for (const auto& [name, v] : second) s2[name] = s.at(name);
  TempDir sharded;
  write_hf_folder(sharded.path() / "a", c, first, s1);
  write_hf_folder(sharded.path() / "b", c, second, s2);
  std::filesystem::rename(sharded.path() / "a" / "model.safetensors", sharded.path() / "model-00001-of-00002.safetensors");
  std::filesystem::rename(sharded.path() / "b" / "model.safetensors", sharded.path() / "model-00002-of-00002.safetensors");
  std::filesystem::copy(dir.file("config.json"), sharded.file("config.json"));
  nlohmann::json index;
  for (const auto& [name, v] : first) index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, v] : second) index["weight_map"][name] = "model-00002-of-00002.safetensors";
  write_bytes(sharded.file("model.safetensors.index.json"), index.dump());
  const LoadedModel a = load_model(dir.path().string(), "", false);
  const LoadedModel b = load_model(sharded.path().string(), "", false);
  EXPECT_EQ(b.format, "Hugging Face sharded safetensors");
  std::vector<int> tokens = {1, 2, 3};
  std::vector<float> ha(3 * c.dim), hb(ha.size());
  a.model->forward(tokens, BatchShape{1, 3}, ha.data());
  b.model->forward(tokens, BatchShape{1, 3}, hb.data());
  EXPECT_EQ(ha, hb);

  index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";  // a lie
  write_bytes(sharded.file("model.safetensors.index.json"), index.dump());
  if (first.count("model.norm.weight") == 0)
    expect_error([&] { load_model(sharded.path().string(), "", false); }, {"index.json", "'model.norm.weight'", "lacks"});
}

TEST_F(ModelFolder, Llama2cTruncatedAndImplausible) {
  write_llama2c(dir.file("m.bin"), c, w);
  std::string bytes = read_bytes(dir.file("m.bin"));
  write_bytes(dir.file("t.bin"), bytes.substr(0, bytes.size() - 4));
  expect_error([&] { Llama2cReader r(dir.file("t.bin")); }, {"t.bin", "truncated"});
  write_bytes(dir.file("short.bin"), bytes.substr(0, 10));
  expect_error([&] { Llama2cReader r(dir.file("short.bin")); }, {"short.bin", "truncated"});
  std::string bad = bytes;
  const int32_t heads = 5;  // dim 16 is not a multiple of 5
  std::memcpy(bad.data() + 12, &heads, 4);
  write_bytes(dir.file("bad.bin"), bad);
  expect_error([&] { Llama2cReader r(dir.file("bad.bin")); }, {"bad.bin", "not a multiple"});
  std::string huge = bytes;
  const int32_t vocab = INT32_MIN;  // a negative vocabulary is a flag; this one has no magnitude in 32 bits
  std::memcpy(huge.data() + 20, &vocab, 4);
  write_bytes(dir.file("huge.bin"), huge);
  expect_error([&] { Llama2cReader r(dir.file("huge.bin")); }, {"huge.bin", "implausible header"});
  write_bytes(dir.file("junk.bin"), std::string(64, '\xff'));
  expect_error([&] { load_model(dir.file("junk.bin"), "", false); }, {"junk.bin", "unknown model format"});
  expect_error([&] { load_model(dir.file("absent.bin"), "", false); }, {"absent.bin", "no such file"});
}

TEST(TextFile, EmptyAndJsonl) {
  TempDir dir;
  write_bytes(dir.file("empty.txt"), "");
  expect_error([&] { read_text_file(dir.file("empty.txt")); }, {"empty.txt", "empty text"});
  write_bytes(dir.file("c.jsonl"), "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n");
  EXPECT_EQ(read_text_file(dir.file("c.jsonl")), "one\n\ntwo");
  write_bytes(dir.file("bad.jsonl"), "{\"text\": \"one\"}\n{\"txt\": 1}\n");
  expect_error([&] { read_text_file(dir.file("bad.jsonl")); }, {"bad.jsonl", "line 2"});
}

TEST(SafetensorsWriter, RoundTripsAndRefusesNaN) {
  TempDir dir;
  Tensor a = Tensor::zeros({2, 3});
  for (int i = 0; i < 6; ++i) a.data[i] = 0.5f * i - 1.0f;
  write_safetensors(dir.file("o.safetensors"), {{"x", &a}});
  SafetensorsReader r(dir.file("o.safetensors"));
  const Tensor b = r.load("x");
  EXPECT_EQ(b.shape, a.shape);
  EXPECT_TRUE(std::equal(a.span().begin(), a.span().end(), b.span().begin()));
  a.data[4] = NAN;
  expect_error([&] { write_safetensors(dir.file("n.safetensors"), {{"x", &a}}); }, {"n.safetensors", "'x'", "non-finite"});
  EXPECT_FALSE(std::filesystem::exists(dir.file("n.safetensors")));
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "temporary file left behind";
}

}  // namespace
}  // namespace baq::test
