#include <cstring>
#include <filesystem>
#include <fstream>

#include "baq/error.hpp"
#include "baq/family.hpp"
#include "baq/io.hpp"
#include "io/tensor_convert.hpp"

namespace baq {

namespace {

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

bool plausible(const Header& h) {
  // In 64 bits: a negative vocab_size (shared-classifier flag) is read as its magnitude, and −2^31 has
  // none in 32.
  auto ok = [](int64_t v) { return v > 0 && v < (1 << 24); };
  const int64_t vocab = h.vocab_size;
  return ok(h.dim) && ok(h.hidden_dim) && ok(h.n_layers) && ok(h.n_heads) && ok(h.n_kv_heads) &&
         ok(vocab < 0 ? -vocab : vocab) && ok(h.seq_len);
}

}  // namespace

bool Llama2cReader::looks_like(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Header h{};
  if (!in.read(reinterpret_cast<char*>(&h), sizeof h)) return false;
  return plausible(h);
}

Llama2cReader::Llama2cReader(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  Header h{};
  if (file_->size() < sizeof h) fail("{}: truncated llama2.c checkpoint ({} bytes, header needs 28)", path, file_->size());
  std::memcpy(&h, file_->data(), sizeof h);
  if (!plausible(h)) fail("{}: not a llama2.c checkpoint (implausible header)", path);
  config_.family = &family_named("llama");
  config_.dim = h.dim;
  config_.hidden_dim = h.hidden_dim;
  config_.n_layers = h.n_layers;
  config_.n_heads = h.n_heads;
  config_.n_kv_heads = h.n_kv_heads;
  config_.vocab_size = h.vocab_size < 0 ? -h.vocab_size : h.vocab_size;
  config_.tied_embeddings = h.vocab_size > 0;  // llama2.c's convention: negative = separate classifier
  config_.max_seq_len = h.seq_len;
  config_.rope_style = RopeStyle::Interleaved;
  if (config_.n_heads > 0 && config_.dim % config_.n_heads != 0)
    fail("{}: dim {} is not a multiple of n_heads {}", path, config_.dim, config_.n_heads);
  config_.head_size = config_.n_heads > 0 ? config_.dim / config_.n_heads : 0;
  config_.embed_dim = config_.dim;
  config_.norm_eps = 1e-5f;
  validate_config(config_, path);

  const int64_t dim = config_.dim, hidden = config_.hidden_dim, L = config_.n_layers, kv = config_.kv_dim();
  const int64_t vocab = config_.vocab_size, hs = config_.head_dim();
  uint64_t offset = sizeof h;
  // Every size is checked arithmetic: a header of plausible numbers can still describe more bytes than
  // 64 bits count, and a wrapped sum would pass the size check below.
  auto grow = [&](uint64_t bytes) {
    if (__builtin_add_overflow(offset, bytes, &offset) || offset > file_->size())
      fail("{}: header describes more weight bytes than the file's {} (truncated or not llama2.c v0)", path,
           file_->size());
  };
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    TensorInfo info{name, DType::F32, std::move(shape), path};
    uint64_t n = 4;
    for (int64_t d : info.shape)
      if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) grow(~uint64_t{0});
    offsets_[name] = offset;
    grow(n);
    infos_.push_back(std::move(info));
  };
  // Stacked arrays in llama2.c order; each layer's slice becomes its own tensor, named by the llama row.
  const Family& f = *config_.family;
  auto stacked = [&](Role role, std::vector<int64_t> shape) {
    for (int64_t l = 0; l < L; ++l) add(f.tensor(role, static_cast<int>(l), false), shape);
  };
  add(f.tensor(Role::Embed, 0, false), {vocab, dim});
  stacked(Role::AttnNorm, {dim});
  stacked(Role::Q, {dim, dim});
  stacked(Role::K, {kv, dim});
  stacked(Role::V, {kv, dim});
  stacked(Role::O, {dim, dim});
  stacked(Role::MlpNorm, {dim});
  stacked(Role::Gate, {hidden, dim});
  stacked(Role::Down, {dim, hidden});
  stacked(Role::Up, {hidden, dim});
  add(f.tensor(Role::FinalNorm, 0, false), {dim});
  grow(static_cast<uint64_t>(config_.max_seq_len) * static_cast<uint64_t>(hs) * 4);  // unused freq_cis tables
  if (!config_.tied_embeddings) add(f.tensor(Role::Head, 0, false), {vocab, dim});
  if (offset != file_->size())
    fail("{}: header describes {} bytes of weights but the file holds {} (truncated or not llama2.c v0)", path,
         offset, file_->size());
}

Tensor Llama2cReader::load(const std::string& name) const {
  auto it = offsets_.find(name);
  if (it == offsets_.end()) fail("{}: missing tensor '{}'", file_->path(), name);
  for (const auto& info : infos_)
    if (info.name == name) return view_tensor(file_, it->second, info);
  fail("{}: missing tensor '{}'", file_->path(), name);
}

std::string Llama2cReader::describe() const {
  return fmt::format("llama2.c v0 {} ({} tensors)", std::filesystem::path(file_->path()).filename().string(),
                     infos_.size());
}

}  // namespace baq
