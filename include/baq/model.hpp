#pragma once
// A causal transformer as a sequence of blocks. A block exposes its linear layers by name and lets a
// caller observe each linear's input: the one seam calibration needs. Nothing here knows about
// quantization.
#include <cstdint>
#include <map>
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
  std::string name;    // "attn.q", "mlp.down", "head", ...
  std::string tensor;  // its weight's Hugging Face name ("model.layers.3.self_attn.q_proj.weight")
  Tensor weight;       // [out, in] in its stored dtype (a mapped view); shape only when it runs packed
  Tensor bias;         // [out] F32, or empty
  std::shared_ptr<const PackedLinear> packed;  // set once quantized (or read from a .baq file)
  int input = 0;       // which activation of its block it reads: linears with the same one share a Hessian
  // Set when quantization smoothed this linear's input (its norm divided by the scale per channel):
  // `weight` is still the original, so while it runs unpacked its input is multiplied back; its
  // packed codes are of weight·diag(input_scale).
  std::vector<float> input_scale;
  double input_alpha = 0.0;  // the smoothing strength that chose it (for reports)
  int64_t out_features() const { return weight.rows(); }
  int64_t in_features() const { return weight.cols(); }
};

class LinearObserver {
 public:
  virtual ~LinearObserver() = default;
  // `x` holds `rows` input rows of `linear.in_features()` values, just before `linear` is applied.
  virtual void observe(int block, const Linear& linear, const float* x, int64_t rows) = 0;
  // Whether the forward pass must still compute `linear`'s output once observed. An observer whose
  // caller discards the block's output says no for the block's last linear: a calibration pass that
  // only gathers inputs then skips that product (the block's output is then not its true output).
  virtual bool output_needed(int /*block*/, const Linear& /*linear*/) const { return true; }
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
  std::vector<float> work;  // one token's buffers, kept so generation allocates nothing per token
};

class Block {
 public:
  virtual ~Block() = default;
  // Updates the residual stream `x` ((batch·seqlen) × dim) in place. With `cache` (one window,
  // shape.start = positions already in it) this step's keys and values are appended to it and the
  // attention also reads the earlier ones.
  virtual void forward(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache = nullptr) const = 0;
  // One token at position `pos` (x: dim values) through the block with its cache, called by every
  // thread of an enclosing OpenMP parallel region (generation runs one region per token).
  // `work` holds token_work_size() floats shared by the team.
  virtual void forward_token(float* x, KvCache::Layer& cache, int pos, float* work) const = 0;
  virtual size_t token_work_size() const = 0;
  virtual std::vector<Linear*> linears() = 0;
  // Divides channel c of the norm that produces linear input `input` by scale[c] (a LayerNorm's bias
  // too), so the linears reading it see x/scale; false (nothing changed) when that input is not a
  // norm's output. `scale` comes back as applied (nudged so the norm's new weights are BF16 values).
  virtual bool scale_norm_output(int input, std::vector<float>& scale) = 0;
  // Whether linear input `input` is a norm's output scale_norm_output can scale (asked before a
  // smoothing is searched for: on other inputs the search would be thrown away).
  virtual bool norm_output_scalable(int input) const = 0;
  // The parameters scale_norm_output may replace, to put back when a trial is undone.
  virtual std::vector<Tensor> smoothable_norms() const = 0;
  virtual void restore_smoothable_norms(const std::vector<Tensor>& saved) = 0;
  // Every parameter under its Hugging Face name, linear weights included.
  virtual std::vector<std::pair<std::string, const Tensor*>> tensors() const = 0;
  int index() const { return index_; }

 protected:
  explicit Block(int index) : index_(index) {}
  int index_;
};

class Model {
 public:
  struct Parts {
    Tensor embeddings;           // [vocab, embed_dim], stored dtype
    std::shared_ptr<const PackedLinear> embeddings_packed;  // set once quantized (rows decoded on lookup)
    Tensor positions;            // OPT's learned positions [max_seq_len + 2, dim], or empty
    Linear project_in, project_out;  // OPT-350m's embedding projections, or empty
    Tensor final_norm, final_norm_bias;
    Linear head;                 // [vocab, embed_dim]; its weight is the embedding when tied
    std::string embeddings_name, positions_name, final_norm_name, final_norm_bias_name;
  };
  Model(ModelConfig config, std::vector<std::unique_ptr<Block>> blocks, Parts parts);
  ~Model();

  const ModelConfig& config() const { return config_; }
  int n_blocks() const { return static_cast<int>(blocks_.size()); }
  Block& block(int i) { return *blocks_[static_cast<size_t>(i)]; }
  const Block& block(int i) const { return *blocks_[static_cast<size_t>(i)]; }
  Linear& head() { return parts_.head; }
  const Linear& head() const { return parts_.head; }
  const Tensor& embeddings() const { return parts_.embeddings; }
  // The quantized token embedding (its own, or the tied head's), or null while it is as stored.
  const PackedLinear* packed_embeddings() const;
  // Replaces the token embedding by its quantized form (an untied model's; a tied one follows its head).
  void set_packed_embeddings(std::shared_ptr<const PackedLinear> packed);
  // Every quantized weight by its Hugging Face tensor name: block linears, head, embedding.
  std::map<std::string, const PackedLinear*> packed_tensors() const;

  // Token embeddings (scaled, projected, plus learned positions where the family has them) of
  // `tokens` (batch·seqlen ids) into x ((batch·seqlen) × dim).
  void embed(std::span<const int> tokens, BatchShape shape, float* x) const;
  // Final norm of `rows` hidden states in place (none for OPT-350m).
  void final_norm(float* x, int64_t rows) const;
  // The head's input smoothed: the final norm divided by scale per channel, the head (still unpacked)
  // multiplying it back; false (nothing changed) for a tied head or one that reads a projection.
  // `scale` comes back as applied.
  bool scale_head_input(std::vector<float>& scale);
  // The head's input for `rows` residual-stream rows: the final norm in place, then OPT-350m's
  // projection out (into a scratch buffer); returns where the rows are.
  const float* head_input(float* x, int64_t rows) const;
  // Logits (rows × vocab) of normed hidden states: projection out, head, soft-cap.
  void logits(const float* hidden, int64_t rows, float* out) const;
  // Embedding, every block and the final norm: hidden ((batch·seqlen) × dim), ready for logits().
  // With `cache`, `tokens` continue the window it holds (batch 1; shape.start is taken from it) and
  // the cache grows by them; the context length bounds the total.
  void forward(std::span<const int> tokens, BatchShape shape, float* hidden, LinearObserver* observer = nullptr,
               KvCache* cache = nullptr) const;
  // The next token of the window `cache` holds: its logits (vocab values), computed in one parallel
  // region (no fork/join per operation); the cache grows by one position.
  void next_logits(int token, KvCache& cache, float* logits) const;

  int64_t parameter_count() const;
  // Every parameter under its Hugging Face name, in checkpoint order (for writing checkpoints); a
  // tied head is not listed twice.
  std::vector<std::pair<std::string, const Tensor*>> tensors() const;
  // The linears that run outside the blocks (head, projections), by name.
  std::vector<const Linear*> outer_linears() const;
  // The name of the first tensor holding a NaN or infinity, or empty (a slow scan, for error messages).
  std::string find_non_finite() const;

 private:
  ModelConfig config_;
  std::vector<std::unique_ptr<Block>> blocks_;
  Parts parts_;
  void embedding_row(int64_t token, float* out) const;
};

// Builds the model of `config` from a source's tensors, named by the config's family row in the
// source's naming. Nothing is converted or read: weights stay views in their stored dtype.
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
