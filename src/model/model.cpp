#include <cmath>
#include <cstring>

#include "baq/error.hpp"
#include "model/blocks.hpp"

namespace baq {

namespace {

// Checkpoints of the base model (OPTModel, LlamaModel) lack the "model." prefix of the causal-LM class.
std::string stored_name(const TensorSource& source, const std::string& name) {
  if (source.contains(name) || source.naming() != TensorNaming::HuggingFace || !name.starts_with("model.")) return name;
  const std::string bare = name.substr(6);
  return source.contains(bare) ? bare : name;
}

}  // namespace

Tensor load_checked(const TensorSource& source, const std::string& wanted, std::vector<int64_t> shape, bool keep_dtype) {
  const std::string name = stored_name(source, wanted);
  if (!source.contains(name)) fail("{}: missing tensor '{}'", source.describe(), name);
  Tensor t = source.load(name);
  if (t.shape != shape) {
    Tensor expected;
    expected.shape = shape;
    fail("{}: tensor '{}' has shape {}, expected {}", source.describe(), name, t.shape_string(), expected.shape_string());
  }
  if (keep_dtype) return t;
  Tensor f = t.to_f32();
  if (const int64_t bad = f.first_non_finite(); bad >= 0)
    fail("{}: tensor '{}' holds a non-finite value (NaN or Inf) at element {}", source.describe(), name, bad);
  return f;
}

Linear load_linear(const TensorSource& source, const ModelConfig& c, const std::string& linear_name, Role role,
                   int layer, int64_t out, int64_t in, bool bias) {
  const bool gguf = source.naming() == TensorNaming::Gguf;
  const std::string stored = stored_name(source, c.family->tensor(role, layer, gguf));
  if (stored.empty()) fail("{}: the {} family names no GGUF tensor for '{}'", source.describe(), c.family->name, linear_name);
  Linear l;
  l.name = linear_name;
  l.tensor = c.family->tensor(role, layer, false);
  if (auto packed = source.load_packed(stored)) {
    if (packed->rows != out || packed->cols != in)
      fail("{}: packed tensor '{}' is {}x{}, expected {}x{}", source.describe(), stored, packed->rows, packed->cols, out, in);
    l.weight.shape = {out, in};
    l.weight.dtype = DType::Packed;
    l.packed = std::move(packed);
  } else {
    l.weight = load_checked(source, stored, {out, in}, true);
  }
  if (bias) l.bias = load_checked(source, c.family->tensor(role, layer, gguf, "bias"), {out}, false);
  return l;
}

Model::Model(ModelConfig config, std::vector<std::unique_ptr<Block>> blocks, Parts parts)
    : config_(std::move(config)), blocks_(std::move(blocks)), parts_(std::move(parts)) {}

Model::~Model() = default;

void Model::embed(std::span<const int> tokens, BatchShape shape, float* x) const {
  const ModelConfig& c = config_;
  const int64_t dim = c.dim, width = c.embed_dim;
  if (static_cast<int64_t>(tokens.size()) != shape.rows()) fail("embed: {} tokens for a batch of {}", tokens.size(), shape.rows());
  if (shape.start < 0 || shape.seqlen > c.max_seq_len - shape.start)
    fail("positions {}..{} exceed the model's context {}", shape.start, shape.start + shape.seqlen - 1, c.max_seq_len);
  for (int t : tokens)
    if (t < 0 || t >= c.vocab_size) fail("token id {} is outside the vocabulary (0..{})", t, c.vocab_size - 1);
  // Rows are converted from the stored dtype one token at a time: the table is never expanded.
  float* e = width == dim ? x : kernels::Scratch::get(11, static_cast<size_t>(shape.rows() * width));
#pragma omp parallel for schedule(static) if (shape.rows() > 1)
  for (int64_t r = 0; r < shape.rows(); ++r) {
    const int64_t t = tokens[static_cast<size_t>(r)];
    embedding_row(t, e + r * width);
    if (c.embed_scale != 1.0f)
      for (int64_t i = 0; i < width; ++i) e[r * width + i] *= c.embed_scale;
  }
  if (width != dim) kernels::linear(e, shape.rows(), parts_.project_in, x);
  if (!parts_.positions.empty()) {
#pragma omp parallel for schedule(static) if (shape.rows() > 1)
    for (int64_t r = 0; r < shape.rows(); ++r) {
      // OPT's learned positions sit at an offset of 2.
      const float* p = parts_.positions.data + (shape.start + r % shape.seqlen + 2) * dim;
      for (int64_t i = 0; i < dim; ++i) x[r * dim + i] += p[i];
    }
  }
}

const PackedLinear* Model::packed_embeddings() const {
  if (parts_.embeddings_packed != nullptr) return parts_.embeddings_packed.get();
  return config_.tied_embeddings ? parts_.head.packed.get() : nullptr;
}

void Model::set_packed_embeddings(std::shared_ptr<const PackedLinear> packed) {
  if (config_.tied_embeddings) fail("the token embedding is tied to the head: it is quantized with it");
  if (packed->rows != config_.vocab_size || packed->cols != config_.embed_dim)
    fail("packed embedding is {}x{}, expected {}x{}", packed->rows, packed->cols, config_.vocab_size, config_.embed_dim);
  parts_.embeddings.release_pages();
  parts_.embeddings_packed = std::move(packed);
}

std::map<std::string, const PackedLinear*> Model::packed_tensors() const {
  std::map<std::string, const PackedLinear*> out;
  for (const auto& b : blocks_)
    for (const Linear* l : b->linears())
      if (l->packed != nullptr) out[l->tensor] = l->packed.get();
  for (const Linear* l : outer_linears())
    if (l->packed != nullptr) out[l->tensor] = l->packed.get();
  if (const PackedLinear* e = packed_embeddings()) out[parts_.embeddings_name] = e;
  return out;
}

void Model::embedding_row(int64_t token, float* out) const {
  if (const PackedLinear* p = packed_embeddings()) decode_rows(*p, token, token + 1, out);
  else parts_.embeddings.rows_to_f32(token, token + 1, out);
}

void Model::final_norm(float* x, int64_t rows) const {
  if (parts_.final_norm.empty()) return;
  kernels::norm(config_.norm, x, parts_.final_norm.data,
                parts_.final_norm_bias.empty() ? nullptr : parts_.final_norm_bias.data, rows, config_.dim,
                config_.norm_eps, x);
}

bool Model::scale_head_input(std::vector<float>& scale) {
  // A tied head is the embedding table, which the embedding lookup reads as it is; OPT-350m's head
  // reads a projection, not the norm.
  if (config_.tied_embeddings || parts_.final_norm.empty() || !parts_.project_out.name.empty() ||
      static_cast<int64_t>(scale.size()) != config_.dim)
    return false;
  divide_norm_channels(config_.norm, parts_.final_norm, parts_.final_norm_bias, scale);
  parts_.head.input_scale.assign(scale.begin(), scale.end());
  return true;
}

const float* Model::head_input(float* x, int64_t rows) const {
  final_norm(x, rows);
  if (parts_.project_out.name.empty()) return x;
  float* p = kernels::Scratch::get(12, static_cast<size_t>(rows * config_.embed_dim));
  kernels::linear(x, rows, parts_.project_out, p);
  return p;
}

void Model::logits(const float* hidden, int64_t rows, float* out) const {
  const float* h = hidden;
  if (!parts_.project_out.name.empty()) {
    float* p = kernels::Scratch::get(12, static_cast<size_t>(rows * config_.embed_dim));
    kernels::linear(hidden, rows, parts_.project_out, p);
    h = p;
  }
  kernels::linear(h, rows, parts_.head, out);
  if (config_.final_softcap > 0.0f) {
    const float cap = config_.final_softcap;
    const int64_t n = rows * config_.vocab_size;
#pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < n; ++i) out[i] = cap * std::tanh(out[i] / cap);
  }
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

void Model::next_logits(int token, KvCache& cache, float* logits) const {
  const ModelConfig& c = config_;
  if (token < 0 || token >= c.vocab_size) fail("token id {} is outside the vocabulary (0..{})", token, c.vocab_size - 1);
  if (cache.length >= c.max_seq_len) fail("position {} exceeds the model's context {}", cache.length, c.max_seq_len);
  cache.layers.resize(blocks_.size());
  size_t block_work = 0;
  for (const auto& b : blocks_) block_work = std::max(block_work, b->token_work_size());
  const size_t need = static_cast<size_t>(c.dim) + static_cast<size_t>(c.embed_dim) * 2 + block_work;
  if (cache.work.size() < need) cache.work.resize(need);
  float* x = cache.work.data();
  float* spare = x + c.dim;  // embed_dim floats (embedding row before projection, or projected output)
  float* work = spare + 2 * c.embed_dim;
  const int pos = cache.length;
  const BatchShape one{1, 1, pos};
#pragma omp parallel
  {
#pragma omp single
    {
      if (c.embed_dim == c.dim) embed(std::span<const int>(&token, 1), one, x);
    }
    if (c.embed_dim != c.dim) {  // OPT-350m: the row, then project_in shared by the team, then positions
#pragma omp single
      {
        embedding_row(token, spare);
        for (int64_t i = 0; i < c.embed_dim; ++i) spare[i] *= c.embed_scale;
      }
      kernels::matvec_team(spare, {{&parts_.project_in, x}});
#pragma omp single
      if (!parts_.positions.empty())
        for (int64_t i = 0; i < c.dim; ++i) x[i] += parts_.positions.data[(pos + 2) * c.dim + i];
    }
    for (size_t i = 0; i < blocks_.size(); ++i) blocks_[i]->forward_token(x, cache.layers[i], pos, work);
#pragma omp single
    final_norm(x, 1);
    const float* h = x;
    if (!parts_.project_out.name.empty()) {
      kernels::matvec_team(x, {{&parts_.project_out, spare}});
      h = spare;
    }
    kernels::matvec_team(h, {{&parts_.head, logits}});
  }
  if (c.final_softcap > 0.0f)
    for (int64_t i = 0; i < c.vocab_size; ++i) logits[i] = c.final_softcap * std::tanh(logits[i] / c.final_softcap);
  cache.length += 1;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : tensors()) n += t->numel();
  return n;
}

std::vector<std::pair<std::string, const Tensor*>> Model::tensors() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  out.emplace_back(parts_.embeddings_name, &parts_.embeddings);
  if (!parts_.positions.empty()) out.emplace_back(parts_.positions_name, &parts_.positions);
  if (!parts_.project_in.name.empty()) out.emplace_back(parts_.project_in.tensor, &parts_.project_in.weight);
  for (const auto& b : blocks_)
    for (auto& entry : b->tensors()) out.push_back(entry);
  if (!parts_.final_norm.empty()) out.emplace_back(parts_.final_norm_name, &parts_.final_norm);
  if (!parts_.final_norm_bias.empty()) out.emplace_back(parts_.final_norm_bias_name, &parts_.final_norm_bias);
  if (!parts_.project_out.name.empty()) out.emplace_back(parts_.project_out.tensor, &parts_.project_out.weight);
  if (!config_.tied_embeddings) out.emplace_back(parts_.head.tensor, &parts_.head.weight);
  return out;
}

std::vector<const Linear*> Model::outer_linears() const {
  std::vector<const Linear*> out;
  for (const Linear* l : {&parts_.project_in, &parts_.project_out, &parts_.head})
    if (!l->name.empty()) out.push_back(l);
  return out;
}

std::string Model::find_non_finite() const {
  for (const auto& [name, t] : tensors())
    if (!t->empty() && t->first_non_finite() >= 0) return name;
  return {};
}

std::unique_ptr<Model> build_model(const ModelConfig& c, const TensorSource& src) {
  const Family& f = *c.family;
  const bool gguf = src.naming() == TensorNaming::Gguf;
  const int64_t dim = c.dim, vocab = c.vocab_size, width = c.embed_dim;
  // A config with fewer layers than the checkpoint would quietly drop some: refuse it, naming both.
  for (Role r : {Role::AttnNorm, Role::Q, Role::Qkv, Role::Down}) {
    const std::string beyond = stored_name(src, f.tensor(r, c.n_layers, gguf));
    if (f.has(r) && !beyond.empty() && src.contains(beyond))
      fail("{}: the config says {} layers but the checkpoint holds more (tensor '{}')", src.describe(), c.n_layers, beyond);
  }
  Model::Parts p;
  p.embeddings_name = f.tensor(Role::Embed, 0, false);
  if (auto packed = src.load_packed(stored_name(src, f.tensor(Role::Embed, 0, gguf)))) {
    if (packed->rows != vocab || packed->cols != width)
      fail("{}: packed embedding is {}x{}, expected {}x{}", src.describe(), packed->rows, packed->cols, vocab, width);
    p.embeddings.shape = {vocab, width};
    p.embeddings.dtype = DType::Packed;
    p.embeddings_packed = std::move(packed);
  } else {
    p.embeddings = load_checked(src, f.tensor(Role::Embed, 0, gguf), {vocab, width}, true);
  }
  if (!c.rotary) {
    p.positions_name = f.tensor(Role::Positions, 0, false);
    p.positions = load_checked(src, f.tensor(Role::Positions, 0, gguf), {static_cast<int64_t>(c.max_seq_len) + 2, dim}, false);
  }
  if (width != dim) {
    p.project_in = load_linear(src, c, "project_in", Role::ProjectIn, 0, dim, width, false);
    p.project_out = load_linear(src, c, "project_out", Role::ProjectOut, 0, width, dim, false);
  }
  std::shared_ptr<const kernels::RopeTable> rope;
  if (c.rotary) rope = std::make_shared<const kernels::RopeTable>(c.max_seq_len, c.rope_frequencies());
  std::vector<std::unique_ptr<Block>> blocks;
  for (int i = 0; i < c.n_layers; ++i) blocks.push_back(std::make_unique<TransformerBlock>(i, c, src, rope));
  if (c.final_norm) {
    p.final_norm_name = f.tensor(Role::FinalNorm, 0, false);
    p.final_norm = load_checked(src, f.tensor(Role::FinalNorm, 0, gguf), {dim}, false);
    if (c.norm == NormKind::Layer) {
      p.final_norm_bias_name = f.tensor(Role::FinalNorm, 0, false, "bias");
      p.final_norm_bias = load_checked(src, f.tensor(Role::FinalNorm, 0, gguf, "bias"), {dim}, false);
    }
  }
  if (c.tied_embeddings) {
    p.head.name = "head";
    p.head.tensor = p.embeddings_name;
    p.head.weight = p.embeddings;
    p.head.packed = p.embeddings_packed;  // a quantized tied head is the quantized embedding
  } else {
    p.head = load_linear(src, c, "head", Role::Head, 0, vocab, width, false);
  }
  return std::make_unique<Model>(c, std::move(blocks), std::move(p));
}

}  // namespace baq
