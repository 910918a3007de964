#pragma once
// A causal transformer as a sequence of blocks. A block exposes its linear layers by name and lets a
// caller observe each linear's input: the one seam calibration needs. Nothing here knows about
// quantization.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "baq/io.hpp"
#include "baq/model_config.hpp"
#include "baq/pack.hpp"
#include "baq/tensor.hpp"
#include "baq/tokenizer.hpp"

namespace baq {

struct Linear {
  std::string name;  // "attn.q", "mlp.down", ...
  Tensor weight;     // [out, in], row-major; shape only (no data) when the layer runs packed
  Tensor bias;       // [out] or empty
  std::shared_ptr<const PackedLinear> packed;  // set when run from a .baq file without expanding
  int64_t out_features() const { return weight.rows(); }
  int64_t in_features() const { return weight.cols(); }
};

class LinearObserver {
 public:
  virtual ~LinearObserver() = default;
  // `x` holds `rows` input rows of `linear.in_features()` values, just before `linear` is applied.
  virtual void observe(int block, const Linear& linear, const float* x, int64_t rows) = 0;
};

struct BatchShape {
  int batch = 1;   // independent windows
  int seqlen = 1;  // tokens per window, positions start..start+seqlen-1
  int start = 0;   // position of each window's first token (non-zero when continuing a KvCache)
  int64_t rows() const { return static_cast<int64_t>(batch) * seqlen; }
};

// Keys and values of the positions one window has run so far, per block: with it, decoding the next
// token runs one row through every layer instead of the whole window again.
struct KvCache {
  struct Layer {
    std::vector<float> k, v;  // length × kv_dim each
  };
  std::vector<Layer> layers;
  int length = 0;  // positions held
};

class Block {
 public:
  virtual ~Block() = default;
  // Updates the residual stream `x` ((batch·seqlen) × dim) in place. With `cache` (one window,
  // shape.start = positions already in it) this step's keys and values are appended to it and the
  // attention also reads the earlier ones.
  virtual void forward(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache = nullptr) const = 0;
  virtual std::vector<Linear*> linears() = 0;
  virtual std::vector<std::pair<std::string, const Tensor*>> tensors() const = 0;  // every parameter, HF names
  int index() const { return index_; }

 protected:
  explicit Block(int index) : index_(index) {}
  int index_;
};

class Model {
 public:
  Model(ModelConfig config, std::vector<std::unique_ptr<Block>> blocks, Tensor embeddings, Tensor positions,
        Tensor final_norm, Tensor final_norm_bias, Tensor head);
  ~Model();

  const ModelConfig& config() const { return config_; }
  int n_blocks() const { return static_cast<int>(blocks_.size()); }
  Block& block(int i) { return *blocks_[static_cast<size_t>(i)]; }
  const Block& block(int i) const { return *blocks_[static_cast<size_t>(i)]; }

  // Token embeddings (plus learned positions for OPT) of `tokens` (batch·seqlen ids) into x.
  void embed(std::span<const int> tokens, BatchShape shape, float* x) const;
  // Final norm of `rows` hidden states in place.
  void final_norm(float* x, int64_t rows) const;
  // Logits (rows × vocab) of normed hidden states.
  void logits(const float* hidden, int64_t rows, float* out) const;
  // Embedding, every block and the final norm: hidden ((batch·seqlen) × dim), ready for logits().
  // With `cache`, `tokens` continue the window it holds (batch 1; shape.start is taken from it) and
  // the cache grows by them; the context length bounds the total.
  void forward(std::span<const int> tokens, BatchShape shape, float* hidden, LinearObserver* observer = nullptr,
               KvCache* cache = nullptr) const;

  int64_t parameter_count() const;
  // Every parameter under its Hugging Face name, in checkpoint order (for writing checkpoints).
  std::vector<std::pair<std::string, const Tensor*>> tensors() const;

 private:
  ModelConfig config_;
  std::vector<std::unique_ptr<Block>> blocks_;
  Tensor embeddings_, positions_, final_norm_, final_norm_bias_, head_;
};

// Builds the blocks of `config.arch` from tensors under Hugging Face names.
std::unique_ptr<Model> build_model(const ModelConfig& config, const TensorSource& source);

struct LoadedModel {
  std::string path;
  std::string format;  // "Hugging Face safetensors", "llama2.c", ...
  ModelConfig config;
  std::unique_ptr<TensorSource> source;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string config_source;  // config.json's path, or which header/metadata held the config
  std::string folder;         // where a tokenizer is looked for
};

// Opens any model input (Hugging Face folder, .safetensors, .baq, GGUF, torch.save zip, llama2.c .bin). `tokenizer_path` names a
// tokenizer when the model does not carry one; `need_tokenizer` = false skips it (e.g. for `info`).
LoadedModel load_model(const std::string& path, const std::string& tokenizer_path, bool need_tokenizer = true);

// The tokenizer of a loaded model: `tokenizer_path` when given, else the one a GGUF or .baq file
// embeds, else the first one found in the model's folder.
std::unique_ptr<Tokenizer> open_model_tokenizer(const LoadedModel& m, const std::string& tokenizer_path);

}  // namespace baq

namespace baq {
// Writes `model` as a Hugging Face folder baq (and transformers, for rotate-half models) reads back:
// config.json, model.safetensors (F32), a copy of the tokenizer files and `extra_files` (name ->
// contents). Each file is written atomically into `dir`, which is created when missing; an existing
// folder must be empty or an earlier baq output (see OutputFolder) and is never removed.
void write_model_folder(const std::string& dir, const Model& model, const Tokenizer* tokenizer,
                        const std::vector<std::pair<std::string, std::string>>& extra_files);
}  // namespace baq
