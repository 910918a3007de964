#include <cblas.h>

#include <cstring>

#include "baq/error.hpp"
#include "model/blocks.hpp"

namespace baq {

Tensor load_checked(const TensorSource& source, const std::string& name, std::vector<int64_t> shape) {
  if (!source.contains(name)) fail("{}: missing tensor '{}'", source.describe(), name);
  Tensor t = source.load(name);
  if (t.shape != shape) {
    Tensor expected;
    expected.shape = shape;
    fail("{}: tensor '{}' has shape {}, expected {}", source.describe(), name, t.shape_string(), expected.shape_string());
  }
  return t;
}

Linear load_linear(const TensorSource& source, const std::string& linear_name, const std::string& tensor, int64_t out,
                   int64_t in) {
  if (auto packed = source.load_packed(tensor)) {
    if (packed->rows != out || packed->cols != in)
      fail("{}: packed tensor '{}' is {}x{}, expected {}x{}", source.describe(), tensor, packed->rows, packed->cols, out, in);
    return Linear{linear_name, Tensor::view({out, in}, nullptr, nullptr), {}, std::move(packed)};
  }
  return Linear{linear_name, load_checked(source, tensor, {out, in}), {}, nullptr};
}

Model::Model(ModelConfig config, std::vector<std::unique_ptr<Block>> blocks, Tensor embeddings, Tensor positions,
             Tensor final_norm, Tensor final_norm_bias, Tensor head)
    : config_(std::move(config)),
      blocks_(std::move(blocks)),
      embeddings_(std::move(embeddings)),
      positions_(std::move(positions)),
      final_norm_(std::move(final_norm)),
      final_norm_bias_(std::move(final_norm_bias)),
      head_(std::move(head)) {}

Model::~Model() = default;

void Model::embed(std::span<const int> tokens, BatchShape shape, float* x) const {
  const int64_t dim = config_.dim;
  if (static_cast<int64_t>(tokens.size()) != shape.rows()) fail("embed: {} tokens for a batch of {}", tokens.size(), shape.rows());
  if (shape.start < 0 || shape.seqlen > config_.max_seq_len - shape.start)
    fail("positions {}..{} exceed the model's context {}", shape.start, shape.start + shape.seqlen - 1, config_.max_seq_len);
  for (int t : tokens)
    if (t < 0 || t >= config_.vocab_size) fail("token id {} is outside the vocabulary (0..{})", t, config_.vocab_size - 1);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < shape.rows(); ++r) {
    std::memcpy(x + r * dim, embeddings_.data + static_cast<int64_t>(tokens[static_cast<size_t>(r)]) * dim,
                static_cast<size_t>(dim) * sizeof(float));
    if (!positions_.empty()) {  // OPT's learned positions sit at an offset of 2
      const float* p = positions_.data + (shape.start + r % shape.seqlen + 2) * dim;
      for (int64_t i = 0; i < dim; ++i) x[r * dim + i] += p[i];
    }
  }
}

void Model::final_norm(float* x, int64_t rows) const {
  if (config_.arch == Architecture::Llama)
    kernels::rmsnorm(x, final_norm_.data, rows, config_.dim, config_.norm_eps, x);
  else
    kernels::layernorm(x, final_norm_.data, final_norm_bias_.data, rows, config_.dim, config_.norm_eps, x);
}

void Model::logits(const float* hidden, int64_t rows, float* out) const {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), config_.vocab_size, config_.dim, 1.0f,
              hidden, config_.dim, head_.data, config_.dim, 0.0f, out, config_.vocab_size);
}

void Model::forward(std::span<const int> tokens, BatchShape shape, float* hidden, LinearObserver* observer,
                    KvCache* cache) const {
  if (cache != nullptr) {
    if (shape.batch != 1) fail("a KV cache holds one window, not a batch of {}", shape.batch);
    shape.start = cache->length;
    cache->layers.resize(blocks_.size());
  }
  embed(tokens, shape, hidden);
  for (size_t i = 0; i < blocks_.size(); ++i)
    blocks_[i]->forward(hidden, shape, observer, cache != nullptr ? &cache->layers[i] : nullptr);
  final_norm(hidden, shape.rows());
  if (cache != nullptr) cache->length += shape.seqlen;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : tensors()) n += t->numel();
  return n;
}

std::vector<std::pair<std::string, const Tensor*>> Model::tensors() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  const bool llama = config_.arch == Architecture::Llama;
  const std::string prefix = llama ? "model." : "model.decoder.";
  out.emplace_back(prefix + "embed_tokens.weight", &embeddings_);
  if (!positions_.empty()) out.emplace_back(prefix + "embed_positions.weight", &positions_);
  for (const auto& b : blocks_)
    for (auto& entry : b->tensors()) out.push_back(entry);
  out.emplace_back(prefix + (llama ? "norm.weight" : "final_layer_norm.weight"), &final_norm_);
  if (!final_norm_bias_.empty()) out.emplace_back(prefix + "final_layer_norm.bias", &final_norm_bias_);
  if (!config_.tied_embeddings) out.emplace_back("lm_head.weight", &head_);
  return out;
}

std::unique_ptr<Model> build_model(const ModelConfig& c, const TensorSource& src) {
  const int64_t dim = c.dim, vocab = c.vocab_size;
  std::vector<std::unique_ptr<Block>> blocks;
  Tensor embeddings, positions, norm, norm_bias, head;
  if (c.arch == Architecture::Llama) {
    auto rope = std::make_shared<const kernels::RopeTable>(c.max_seq_len, c.head_dim(), c.rope_theta);
    embeddings = load_checked(src, "model.embed_tokens.weight", {vocab, dim});
    for (int i = 0; i < c.n_layers; ++i) blocks.push_back(std::make_unique<LlamaBlock>(i, c, src, rope));
    norm = load_checked(src, "model.norm.weight", {dim});
  } else {
    // OPT checkpoints name the decoder "model.decoder." (OPTForCausalLM) or "decoder." (OPTModel).
    const std::string prefix = src.contains("model.decoder.embed_tokens.weight") ? "model.decoder." : "decoder.";
    embeddings = load_checked(src, prefix + "embed_tokens.weight", {vocab, dim});
    positions = load_checked(src, prefix + "embed_positions.weight", {static_cast<int64_t>(c.max_seq_len) + 2, dim});
    for (int i = 0; i < c.n_layers; ++i) blocks.push_back(std::make_unique<OptBlock>(i, c, src, prefix));
    norm = load_checked(src, prefix + "final_layer_norm.weight", {dim});
    norm_bias = load_checked(src, prefix + "final_layer_norm.bias", {dim});
  }
  head = c.tied_embeddings ? embeddings : load_checked(src, "lm_head.weight", {vocab, dim});
  return std::make_unique<Model>(c, std::move(blocks), std::move(embeddings), std::move(positions), std::move(norm),
                                 std::move(norm_bias), std::move(head));
}

}  // namespace baq
