#pragma once
// Readers turn checkpoint bytes into named tensors, kept mapped in their stored dtype. Every size and
// offset is validated against the file before it is trusted; failures throw baq::Error naming the file
// and the problem.
#include <cstdint>
#include <functional>
#include <ostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "baq/family.hpp"
#include "baq/half.hpp"
#include "baq/json.hpp"
#include "baq/output.hpp"
#include "baq/model_config.hpp"
#include "baq/tensor.hpp"

namespace baq {

// A read-only mapped file: tensors are views into it, read from disk only when used.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  uint8_t* data() const { return data_; }
  // Drops the pages wholly inside [offset, offset + bytes) from the process's memory once their
  // bytes have been copied out (read back from the file if touched again).
  void release(uint64_t offset, uint64_t bytes) const { release_mapped_pages(data_ + offset, bytes); }
  // The same for any mapped range: only whole pages inside it, so a neighbour sharing a page edge
  // keeps its bytes.
  static void release_mapped_pages(const void* p, uint64_t bytes);

 private:
  std::string path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};


struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::string file;
};

struct PackedLinear;

// Which names a source's tensors carry: Hugging Face's, or llama.cpp's (GGUF). A family row gives both.
enum class TensorNaming { HuggingFace, Gguf };

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  virtual bool contains(const std::string& name) const = 0;
  // The tensor in its stored dtype, a view into the mapped file (nothing is read until it is used);
  // a converted F32 copy only where the bytes cannot be viewed (misaligned, strided, Q8_0).
  virtual Tensor load(const std::string& name) const = 0;
  virtual TensorNaming naming() const { return TensorNaming::HuggingFace; }
  virtual std::string describe() const = 0;
  // A quantized linear kept packed, when the source stores `name` that way (a .baq file); else null.
  virtual std::shared_ptr<const PackedLinear> load_packed(const std::string& /*name*/) const { return nullptr; }
};

class SafetensorsReader final : public TensorSource {
 public:
  explicit SafetensorsReader(const std::string& path);
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  bool contains(const std::string& name) const override { return index_.count(name) != 0; }
  Tensor load(const std::string& name) const override;
  std::string describe() const override;
  // The header's "__metadata__" string entries.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::map<std::string, std::string> metadata_;
  struct Entry {
    size_t info;
    uint64_t offset;  // absolute offset in the file
    uint64_t bytes;
  };
  std::shared_ptr<MappedFile> file_;
  std::vector<TensorInfo> infos_;
  std::map<std::string, Entry> index_;
};

// A Hugging Face shard index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) and its
// shards, seen as one source; `open_shard` opens one shard file.
class ShardedReader final : public TensorSource {
 public:
  using ShardOpener = std::function<std::unique_ptr<TensorSource>(const std::string& path)>;
  ShardedReader(const std::string& index_path, const ShardOpener& open_shard);
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  bool contains(const std::string& name) const override { return owner_.count(name) != 0; }
  Tensor load(const std::string& name) const override;
  std::string describe() const override;

 private:
  std::string index_path_;
  std::vector<std::unique_ptr<TensorSource>> shards_;
  std::map<std::string, size_t> owner_;
  std::vector<TensorInfo> infos_;
};

class ZipArchive;

// A torch.save zip (`pytorch_model.bin`): `<archive>/data.pkl` read by a restricted unpickler that
// never runs code, tensors mapped in place from `<archive>/data/<key>` (F32, F16, BF16; strided views
// are gathered). Tensors of other types (integer buffers) are listed by describe() and not loaded.
class TorchCheckpointReader final : public TensorSource {
 public:
  explicit TorchCheckpointReader(const std::string& path);
  ~TorchCheckpointReader() override;
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  bool contains(const std::string& name) const override { return entries_.count(name) != 0; }
  Tensor load(const std::string& name) const override;
  std::string describe() const override;
  // A zip whose first entry is a torch archive (not a llama2.c .bin); a legacy pre-1.6 torch file is
  // recognised too, so the loader can refuse it by name.
  static bool looks_like(const std::string& path);

 private:
  struct Entry {
    size_t info;
    uint64_t offset;  // of the storage's first byte in the file
    int64_t element_offset;
    std::vector<int64_t> stride;
  };
  std::shared_ptr<MappedFile> file_;
  std::unique_ptr<ZipArchive> zip_;
  std::string archive_;  // the folder name inside the zip
  std::vector<TensorInfo> infos_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> skipped_;  // tensors of non-float types
};

// llama2.c legacy (v0) checkpoints: a 7 x int32 header then F32 weights stacked per layer. Tensors are
// exposed under Hugging Face names (per-layer views), rotary pairs interleaved (Meta's layout).
class Llama2cReader final : public TensorSource {
 public:
  explicit Llama2cReader(const std::string& path);
  const ModelConfig& config() const { return config_; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  bool contains(const std::string& name) const override { return offsets_.count(name) != 0; }
  Tensor load(const std::string& name) const override;
  std::string describe() const override;

  // True when the first bytes look like a llama2.c header (used to pick a reader for a `.bin`).
  static bool looks_like(const std::string& path);

 private:
  std::shared_ptr<MappedFile> file_;
  ModelConfig config_;
  std::vector<TensorInfo> infos_;
  std::map<std::string, uint64_t> offsets_;
};

// GGUF v2/v3 (llama.cpp): F32, F16, BF16 tensors viewed in place and Q8_0 ones decoded, under
// llama.cpp's own names (the family row maps them), the metadata for the family's config reader, and
// the embedded tokenizer's vocabulary.
class GgufReader final : public TensorSource, public GgufMetadata {
 public:
  explicit GgufReader(const std::string& path);
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  bool contains(const std::string& name) const override { return entries_.count(name) != 0; }
  Tensor load(const std::string& name) const override;
  std::string describe() const override;
  TensorNaming naming() const override { return TensorNaming::Gguf; }
  static bool looks_like(const std::string& path);

  bool has(const std::string& key) const override { return kv_.count(key) != 0; }
  double number(const std::string& key) const override;
  std::string string(const std::string& key) const override;
  std::vector<double> numbers(const std::string& key) const override;
  std::vector<std::string> strings(const std::string& key) const override;
  const std::string& path() const override;
  std::vector<float> small_tensor(const std::string& name) const override;

  struct Value {
    uint32_t type = 0;
    double number = 0;
    std::string text;
    std::vector<Value> items;
  };

 private:
  struct Entry {
    size_t info;
    uint32_t type;
    uint64_t offset, bytes;
  };
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, Value> kv_;
  std::vector<TensorInfo> infos_;
  std::map<std::string, Entry> entries_;
};


// Safetensors metadata key baq writes when q/k rows are in Meta's interleaved layout (a checkpoint
// converted from llama2.c), which config.json cannot express.
inline constexpr const char* kRopeStyleMetadataKey = "baq.rope_style";

// Writes F32 tensors as a safetensors file, atomically (temporary file + rename).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});



}  // namespace baq

namespace baq {
// The bytes of a file, read whole (small files: tokenizers, configs).
std::string read_binary_file(const std::string& path);
// The whole of a text file; a `.jsonl` file's "text" fields joined with "\n\n" (C4 style). Empty text
// is an error naming the file.
std::string read_text_file(const std::string& path);
}  // namespace baq
