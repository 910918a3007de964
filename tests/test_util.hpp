#pragma once
// Helpers for tests that build their own tiny checkpoints.
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "baq/error.hpp"

#include "baq/model.hpp"
#include "baq/model_config.hpp"
#include "baq/tensor.hpp"

namespace baq::test {

// A fresh folder under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

using Weights = std::map<std::string, std::vector<double>>;  // HF name -> values (row-major)
using Shapes = std::map<std::string, std::vector<int64_t>>;

// Random weights of a small model under Hugging Face names (N(0, scale²), norms near 1).
void random_weights(const ModelConfig& c, uint32_t seed, Weights& w, Shapes& shapes);

// A small Llama config: widths, layers, heads / KV heads, vocabulary, context, tied head.
ModelConfig small_llama(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int context, bool tied);

// Random weights of `c` (seeded) written as an F32 HF folder at `dir`, loaded back without a
// tokenizer; `weights` receives the values when given.
LoadedModel random_hf_model(const ModelConfig& c, uint32_t seed, const std::filesystem::path& dir,
                            Weights* weights = nullptr);

// A llama2.c tokenizer.bin: the 3 specials, 256 byte pieces "<0xXX>", then `extra` (piece, score).
void write_llama2c_tokenizer(const std::string& path, const std::vector<std::pair<std::string, float>>& extra);

// Writes an HF folder (config.json + model.safetensors in `dtype`: "F32", "F16" or "BF16").
void write_hf_folder(const std::filesystem::path& dir, const ModelConfig& c, const Weights& w, const Shapes& shapes,
                     const std::string& dtype = "F32");

// Writes `w` as one safetensors file in `dtype` ("F32", "F16" or "BF16"), tensors in name order.
void write_weights_safetensors(const std::string& path, const Weights& w, const Shapes& shapes, const std::string& dtype);

// A GGUF v3 file as llama.cpp lays it out: metadata, then tensors (F32 or F16) aligned to 32.
class GgufWriter {
 public:
  void u32(const std::string& key, uint32_t v);
  void f32(const std::string& key, float v);
  void str(const std::string& key, const std::string& v);
  void strings(const std::string& key, const std::vector<std::string>& v);
  void floats(const std::string& key, const std::vector<float>& v);
  // `shape` as the model sees it (rows first); stored fastest dimension first, as GGUF does.
  void tensor(const std::string& name, const std::vector<int64_t>& shape, const std::vector<double>& values, bool f16 = false);
  void write(const std::string& path) const;

 private:
  struct Kv {
    std::string key;
    uint32_t type;
    std::string bytes;
  };
  struct T {
    std::string name;
    std::vector<int64_t> shape;
    uint32_t type;
    std::string data;
  };
  std::vector<Kv> kv_;
  std::vector<T> tensors_;
};

// Writes a raw safetensors file from a header object and data bytes (for malformed-file tests).
void write_raw_safetensors(const std::string& path, const std::string& header, const std::string& data);

// Writes a llama2.c v0 checkpoint of a Llama config (weights in Meta's interleaved rotary layout).
void write_llama2c(const std::string& path, const ModelConfig& c, const Weights& w);

void write_bytes(const std::string& path, const std::string& bytes);
std::string read_bytes(const std::string& path);

// Runs a shell command, returning its exit status and combined output.
struct CommandResult {
  int status;
  std::string output;
};
CommandResult run_command(const std::string& command);

uint16_t f32_to_bf16(float f);  // round to nearest even
uint16_t f32_to_f16(float f);   // round to nearest even, normal range only

// Runs `fn`, expecting a baq::Error whose single-line message contains every fragment.
template <class Fn>
void expect_error(Fn fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

std::string shared_dir();
bool shared_has(const std::string& relative);

}  // namespace baq::test
