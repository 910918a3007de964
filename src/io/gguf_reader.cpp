#include <cmath>
#include <cstring>
#include <optional>
#include <filesystem>
#include <fstream>
#include <regex>

#include "baq/error.hpp"
#include "baq/io.hpp"

namespace baq {

namespace {

enum : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30 };
enum : uint32_t { kU8, kI8, kU16, kI16, kU32, kI32, kF32v, kBool, kString, kArray, kU64, kI64, kF64 };

// A bounds-checked cursor over the mapped file: every read names the file when it would overrun.
class Cursor {
 public:
  Cursor(const MappedFile& f) : f_(f) {}
  uint64_t pos = 0;
  void need(uint64_t n, const char* what) const {
    if (n > f_.size() - pos) fail("{}: truncated GGUF while reading {} at byte {}", f_.path(), what, pos);
  }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, f_.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string string(const char* what) {
    const auto n = read<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(f_.data() + pos), n);
    pos += n;
    return s;
  }
  void skip(uint64_t n, const char* what) {
    need(n, what);
    pos += n;
  }

 private:
  const MappedFile& f_;
};

using Value = GgufReader::Value;

Value read_value(Cursor& c, uint32_t type, const std::string& key, int depth, const std::string& path) {
  Value v;
  v.type = type;
  switch (type) {
    case kU8: v.number = c.read<uint8_t>("a value"); break;
    case kI8: v.number = c.read<int8_t>("a value"); break;
    case kU16: v.number = c.read<uint16_t>("a value"); break;
    case kI16: v.number = c.read<int16_t>("a value"); break;
    case kU32: v.number = c.read<uint32_t>("a value"); break;
    case kI32: v.number = c.read<int32_t>("a value"); break;
    case kF32v: v.number = c.read<float>("a value"); break;
    case kBool: v.number = c.read<uint8_t>("a value"); break;
    case kU64: v.number = static_cast<double>(c.read<uint64_t>("a value")); break;
    case kI64: v.number = static_cast<double>(c.read<int64_t>("a value")); break;
    case kF64: v.number = c.read<double>("a value"); break;
    case kString: v.text = c.string("a string"); break;
    case kArray: {
      if (depth > 2) fail("{}: metadata '{}' nests arrays too deep", path, key);
      const auto item_type = c.read<uint32_t>("an array type");
      const auto n = c.read<uint64_t>("an array length");
      c.need(n, "an array");  // every item takes at least a byte: a lying count fails here
      v.items.reserve(n);
      for (uint64_t i = 0; i < n; ++i) v.items.push_back(read_value(c, item_type, key, depth + 1, path));
      break;
    }
    default: fail("{}: metadata '{}' has unknown value type {}", path, key, type);
  }
  return v;
}

}  // namespace

bool GgufReader::looks_like(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4];
  return static_cast<bool>(in.read(magic, 4)) && std::memcmp(magic, "GGUF", 4) == 0;
}

GgufReader::GgufReader(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  Cursor c(*file_);
  if (file_->size() < 4 || std::memcmp(file_->data(), "GGUF", 4) != 0) fail("{}: not a GGUF file (bad magic)", path);
  c.pos = 4;
  version_ = c.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) fail("{}: GGUF version {} is not supported (2 and 3 are read)", path, version_);
  const auto n_tensors = c.read<uint64_t>("the tensor count");
  const auto n_kv = c.read<uint64_t>("the metadata count");
  if (n_tensors > file_->size() / 8 || n_kv > file_->size() / 8)
    fail("{}: tensor count {} or metadata count {} cannot fit in the file", path, n_tensors, n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.string("a metadata key");
    const auto type = c.read<uint32_t>("a metadata type");
    if (kv_.count(key)) fail("{}: duplicate metadata key '{}'", path, key);
    kv_[key] = read_value(c, type, key, 0, path);
  }
  const double align_value = has("general.alignment") ? number("general.alignment") : 32.0;
  if (!(align_value >= 1 && align_value <= (1 << 20))) fail("{}: alignment {} is out of range", path, align_value);
  const auto alignment = static_cast<uint64_t>(align_value);
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) fail("{}: alignment {} is not a power of two", path, alignment);

  // Tensor directory.
  struct Raw {
    std::string name;
    std::vector<int64_t> shape;
    uint32_t type;
    uint64_t offset, bytes;
  };
  std::vector<Raw> raws;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Raw r;
    r.name = c.string("a tensor name");
    const auto n_dims = c.read<uint32_t>("a tensor rank");
    if (n_dims == 0 || n_dims > 4) fail("{}: tensor '{}' has rank {}", path, r.name, n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto dim = c.read<uint64_t>("a tensor dimension");
      if (dim == 0 || dim > (uint64_t{1} << 40) || numel > (uint64_t{1} << 50) / dim)
        fail("{}: tensor '{}' has an impossible shape", path, r.name);
      numel *= dim;
      r.shape.insert(r.shape.begin(), static_cast<int64_t>(dim));  // GGUF lists the fastest dimension first
    }
    r.type = c.read<uint32_t>("a tensor type");
    r.offset = c.read<uint64_t>("a tensor offset");
    switch (r.type) {
      case kF32: r.bytes = numel * 4; break;
      case kF16:
      case kBF16: r.bytes = numel * 2; break;
      case kQ8_0:
        if (numel % 32 != 0) fail("{}: Q8_0 tensor '{}' is not whole blocks of 32", path, r.name);
        r.bytes = numel / 32 * 34;
        break;
      default: fail("{}: tensor '{}' has unsupported type {} (F32, F16, BF16 and Q8_0 are read)", path, r.name, r.type);
    }
    if (r.offset % alignment != 0) fail("{}: tensor '{}' offset {} is not aligned to {}", path, r.name, r.offset, alignment);
    raws.push_back(std::move(r));
  }
  const uint64_t data = (c.pos + alignment - 1) / alignment * alignment;
  // A vocabulary-only file (llama.cpp's ggml-vocab-*.gguf) ends with its metadata.
  if (data > file_->size() && !raws.empty()) fail("{}: truncated GGUF (no tensor data)", path);
  for (const Raw& r : raws) {
    if (r.offset > file_->size() - data || r.bytes > file_->size() - data - r.offset)
      fail("{}: tensor '{}' data lies outside the file (truncated?)", path, r.name);
    const std::string& name = r.name;
    if (entries_.count(name)) fail("{}: duplicate tensor '{}'", path, r.name);
    TensorInfo info{name, r.type == kF32 ? DType::F32 : r.type == kBF16 ? DType::BF16 : DType::F16, r.shape, path};
    entries_[name] = Entry{infos_.size(), r.type, data + r.offset, r.bytes};
    infos_.push_back(std::move(info));
  }

}

double GgufReader::number(const std::string& key) const {
  const auto it = kv_.find(key);
  if (it == kv_.end()) fail("{}: missing metadata '{}'", file_->path(), key);
  if (it->second.type == kString || it->second.type == kArray) fail("{}: metadata '{}' is not a number", file_->path(), key);
  return it->second.number;
}

std::string GgufReader::string(const std::string& key) const {
  const auto it = kv_.find(key);
  if (it == kv_.end()) fail("{}: missing metadata '{}'", file_->path(), key);
  if (it->second.type != kString) fail("{}: metadata '{}' is not a string", file_->path(), key);
  return it->second.text;
}

std::vector<double> GgufReader::numbers(const std::string& key) const {
  std::vector<double> out;
  const auto it = kv_.find(key);
  if (it == kv_.end()) return out;
  if (it->second.type != kArray) fail("{}: metadata '{}' is not an array", file_->path(), key);
  for (const Value& v : it->second.items) {
    if (v.type == kString || v.type == kArray) fail("{}: metadata '{}' holds a non-number", file_->path(), key);
    out.push_back(v.number);
  }
  return out;
}

std::vector<std::string> GgufReader::strings(const std::string& key) const {
  std::vector<std::string> out;
  const auto it = kv_.find(key);
  if (it == kv_.end()) return out;
  if (it->second.type != kArray) fail("{}: metadata '{}' is not an array", file_->path(), key);
  for (const Value& v : it->second.items) {
    if (v.type != kString) fail("{}: metadata '{}' holds a non-string", file_->path(), key);
    out.push_back(v.text);
  }
  return out;
}

const std::string& GgufReader::path() const { return file_->path(); }

std::vector<float> GgufReader::small_tensor(const std::string& name) const {
  if (!contains(name)) return {};
  const Tensor t = load(name).to_f32();
  if (t.numel() > (1 << 20)) fail("{}: tensor '{}' is too large for metadata", file_->path(), name);
  return std::vector<float>(t.data, t.data + t.numel());
}

Tensor GgufReader::load(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail("{}: missing tensor '{}'", file_->path(), name);
  const Entry& e = it->second;
  const TensorInfo& info = infos_[e.info];
  const uint8_t* src = file_->data() + e.offset;
  if (e.type != kQ8_0) {
    if (reinterpret_cast<uintptr_t>(src) % dtype_size(info.dtype) != 0)
      fail("{}: tensor '{}' is not aligned for its type", file_->path(), name);
    return Tensor::view_of(info.shape, info.dtype, src, file_, true);
  }
  // Q8_0 blocks of 32: an F16 scale, then 32 signed bytes. Decoded once into F32.
  Tensor t = Tensor::zeros(info.shape);
  const int64_t n = t.numel();
  for (int64_t b = 0; b < n / 32; ++b) {
    uint16_t h;
    std::memcpy(&h, src + 34 * b, 2);
    const float d = f16_to_f32(h);
    for (int i = 0; i < 32; ++i) t.data[32 * b + i] = d * static_cast<float>(static_cast<int8_t>(src[34 * b + 2 + i]));
  }
  return t;
}

std::string GgufReader::describe() const {
  return fmt::format("GGUF v{} {} ({} tensors)", version_, std::filesystem::path(file_->path()).filename().string(),
                     infos_.size());
}

}  // namespace baq
