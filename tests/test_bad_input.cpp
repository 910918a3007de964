// Hostile and careless input through the CLI: every case ends with one line "baq: error: ..." naming
// the file (and the field, for JSON), exit status 1, no crash, and no result computed from a file
// that is not what it claims to be.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstring>

#include "test_util.hpp"
#include "torch_writer.hpp"

namespace baq::test {
namespace {

const std::string kBaq = BAQ_BINARY;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    c = small_llama(16, 24, 2, 2, 1, 300, 32, true);
    random_weights(c, 21, w, s);
    write_llama2c(dir.file("model.bin"), c, w);
    std::vector<std::pair<std::string, float>> extra = {{" ", 0.0f}};
    for (int i = 260; i < 300; ++i) extra.emplace_back(std::string(1, static_cast<char>('A' + (i - 260))), 0.0f);
    write_llama2c_tokenizer(dir.file("tok.bin"), extra);
    std::string text;
    for (int i = 0; i < 40; ++i) text += "The quick brown fox jumps over the lazy dog. ";
    write_bytes(dir.file("text.txt"), text);
  }
  // Runs baq with `args`; expects the one-line error containing every fragment.
  void refused(const std::string& args, std::initializer_list<std::string> fragments) {
    // stderr alone (stdout may carry progress lines the run printed before failing).
    const auto r = run_command("(" + kBaq + " " + args + " 2>&1 >/dev/null)");
    EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("baq: error: ", 0), 0u) << r.output;
    for (const auto& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << "'" << f << "' not in: " << r.output;
  }
  std::string ppl_args(const std::string& model) {
    return "ppl " + model + " --tokenizer " + dir.file("tok.bin") + " --text " + dir.file("text.txt") + " --seqlen 16";
  }
  ModelConfig c;
  Weights w;
  Shapes s;
  TempDir dir;
};

TEST_F(BadInput, ArgumentErrorsAreOneLineAndStatusOne) {
  refused("ppl " + dir.file("model.bin"), {"--text"});
  refused("quantize " + dir.file("model.bin") + " --out x.baq --nsamples 0", {"--nsamples", "0 is outside 1..1048576"});
  refused("quantize " + dir.file("model.bin") + " --out x.baq --nsamples 2147483647", {"--nsamples", "outside"});
  refused("quantize " + dir.file("model.bin") + " --out x.baq --bits 99", {"--bits", "outside 0.25..8"});
  refused("quantize " + dir.file("model.bin") + " --out x.baq --method awq", {"--method", "awq"});
  refused("generate " + dir.file("model.bin") + " --prompt A --temp nan", {"--temp", "not a finite number"});
  refused("generate " + dir.file("model.bin") + " --prompt A --top-p 1e999", {"--top-p"});
  refused("ppl " + dir.file("model.bin") + " --text x --no-such-flag", {"--no-such-flag"});
  refused("frobnicate", {"subcommand"});
  // Help is not an error.
  EXPECT_EQ(run_command(kBaq + " --help").status, 0);
  EXPECT_EQ(run_command(kBaq + " quantize --help").status, 0);
}

TEST_F(BadInput, Llama2cHeaderWhoseSizesWrapPast64Bits) {
  // Plausible numbers (< 2^24 each) whose products and sums exceed 2^64.
  const int32_t header[7] = {(1 << 24) - 16, (1 << 24) - 8, (1 << 24) - 1, 8, 8, (1 << 24) - 1, (1 << 24) - 1};
  write_bytes(dir.file("wrap.bin"), std::string(reinterpret_cast<const char*>(header), sizeof header));
  refused(ppl_args(dir.file("wrap.bin")), {"wrap.bin", "more weight bytes than the file"});
  refused("info " + dir.file("wrap.bin"), {"wrap.bin"});
}

TEST_F(BadInput, ReportFieldsAreValidatedBeforeUse) {
  const std::string report = R"({"method": "baq", "settings": {"rate": 3}, "totals": {"bits_per_weight": 3.1},
    "layers": [{"name": "x", "cols": 3, "levels": [4, -7, 2]}]})";
  write_bytes(dir.file("r.json"), report);
  refused("report " + dir.file("r.json") + " --html " + dir.file("r.html"), {"r.json", "layer 0", "-7 is outside"});
  write_bytes(dir.file("r.json"), R"({"method": "baq", "settings": {}, "totals": {"bits_per_weight": "3"}, "layers": []})");
  refused("report " + dir.file("r.json") + " --html " + dir.file("r.html"), {"r.json", "'bits_per_weight'", "must be a number"});
  write_bytes(dir.file("r.json"), R"({"method": "baq", "settings": {}, "totals": {"bits_per_weight": 3}, "layers": [{"name": "x", "cols": 2, "levels": [2]}]})");
  refused("report " + dir.file("r.json") + " --html " + dir.file("r.html"), {"r.json", "one level count per column"});
  write_bytes(dir.file("r.json"), std::string(100000, '[') + std::string(100000, ']'));
  refused("report " + dir.file("r.json") + " --html " + dir.file("r.html"), {"r.json", "nests deeper"});
  EXPECT_FALSE(std::filesystem::exists(dir.file("r.html")));
}

TEST_F(BadInput, SafetensorsLayoutRules) {
  const std::string f32 = std::string(16, '\0');
  auto folder = [&](const std::string& header, const std::string& data) {
    std::filesystem::create_directories(dir.path() / "st");
    write_raw_safetensors(dir.file("st/model.safetensors"), header, data);
    return dir.file("st/model.safetensors");
  };
  auto open = [&](const std::string& path) { SafetensorsReader r(path); };
  expect_error([&] { open(folder(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", f32)); },
               {"model.safetensors", "overlap"});
  expect_error([&] { open(folder(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", f32)); },
               {"model.safetensors", "duplicate key 'a'"});
  expect_error([&] { open(folder(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", f32)); },
               {"model.safetensors", "bytes 0..8", "belong to no tensor"});
  expect_error([&] { open(folder(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32)); },
               {"model.safetensors", "holds 16 bytes but the tensors cover 8"});
}

TEST_F(BadInput, TorchStorageCrcIsCheckedAtOpen) {
  const std::vector<TorchTensorSpec> specs = {{"x", "FloatStorage", "0", 4, 0, {2, 2}, {}}};
  const std::string data = storage_bytes({1, 2, 3, 4}, "FloatStorage");
  write_torch_zip(dir.file("ok.bin"), {{"archive/data.pkl", torch_state_dict_pickle(specs)}, {"archive/data/0", data}});
  std::string bytes = read_bytes(dir.file("ok.bin"));
  const size_t at = bytes.find(data);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5] ^= 0x20;  // a flipped bit in a tensor's bytes, not in data.pkl
  write_bytes(dir.file("bad.bin"), bytes);
  expect_error([&] { TorchCheckpointReader r(dir.file("bad.bin")); }, {"bad.bin", "'archive/data/0'", "CRC-32"});
}

TEST_F(BadInput, TokenizerOfAnotherVocabularyIsRefused) {
  // A 300-token model with a tokenizer.bin of 32,000 pieces (or of fewer than the model's).
  if (shared_has("models/llama2-tokenizer.bin"))
    refused("ppl " + dir.file("model.bin") + " --tokenizer " + shared_dir() + "/models/llama2-tokenizer.bin --text " +
                dir.file("text.txt") + " --seqlen 16",
            {"llama2-tokenizer.bin", "32000 pieces", "300 tokens"});
  std::vector<std::pair<std::string, float>> fewer = {{" ", 0.0f}};
  write_llama2c_tokenizer(dir.file("small.bin"), fewer);
  refused("ppl " + dir.file("model.bin") + " --tokenizer " + dir.file("small.bin") + " --text " + dir.file("text.txt"),
          {"small.bin", "260 pieces", "300 tokens"});
}

TEST_F(BadInput, NonFiniteWeightsAreNamedNotPrinted) {
  w["model.layers.1.mlp.up_proj.weight"][3] = NAN;
  write_llama2c(dir.file("nan.bin"), c, w);
  refused(ppl_args(dir.file("nan.bin")), {"'model.layers.1.mlp.up_proj.weight'", "non-finite"});
  refused("generate " + dir.file("nan.bin") + " --tokenizer " + dir.file("tok.bin") + " --prompt ABC -n 4",
          {"'model.layers.1.mlp.up_proj.weight'", "non-finite"});
  refused("quantize " + dir.file("nan.bin") + " --tokenizer " + dir.file("tok.bin") + " --calib " + dir.file("text.txt") +
              " --nsamples 2 --seqlen 16 --out " + dir.file("q.baq"),
          {"'model.layers.1.mlp.up_proj.weight'", "non-finite"});
  EXPECT_FALSE(std::filesystem::exists(dir.file("q.baq")));
}

TEST_F(BadInput, WrongJsonTypesNameTheFileAndField) {
  std::filesystem::create_directories(dir.path() / "hf");
  write_hf_folder(dir.path() / "hf", c, w, s);
  auto config = nlohmann::json::parse(read_bytes(dir.file("hf/config.json")));
  config["rms_norm_eps"] = "tiny";
  write_bytes(dir.file("hf/config.json"), config.dump());
  refused("info " + dir.file("hf"), {"config.json", "'rms_norm_eps'", "must be a number"});
  config["rms_norm_eps"] = 1e-5;
  config["tie_word_embeddings"] = 1;
  write_bytes(dir.file("hf/config.json"), config.dump());
  refused("info " + dir.file("hf"), {"config.json", "'tie_word_embeddings'", "true or false"});
}

}  // namespace
}  // namespace baq::test
