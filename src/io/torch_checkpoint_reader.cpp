#include <cstring>
#include <filesystem>
#include <fstream>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "io/tensor_convert.hpp"
#include "io/torch_pickle.hpp"
#include "io/zip_archive.hpp"

namespace baq {

namespace {

// The magic number the pre-1.6 (non-zip) torch.save format starts with, as a pickled long.
constexpr uint8_t kLegacyTorchMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

bool is_legacy_torch(const uint8_t* data, uint64_t size) {
  return size >= sizeof(kLegacyTorchMagic) && std::memcmp(data, kLegacyTorchMagic, sizeof(kLegacyTorchMagic)) == 0;
}

DType float_dtype(const std::string& storage_type, bool& ok) {
  ok = true;
  if (storage_type == "FloatStorage") return DType::F32;
  if (storage_type == "HalfStorage") return DType::F16;
  if (storage_type == "BFloat16Storage") return DType::BF16;
  ok = false;
  return DType::F32;
}

bool row_major(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  int64_t expected = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] != 1 && stride[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

}  // namespace

bool TorchCheckpointReader::looks_like(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint8_t head[sizeof(kLegacyTorchMagic)] = {};
  in.read(reinterpret_cast<char*>(head), sizeof(head));
  const auto got = static_cast<uint64_t>(in.gcount());
  return (got >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) || is_legacy_torch(head, got);
}

TorchCheckpointReader::TorchCheckpointReader(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  if (is_legacy_torch(file_->data(), file_->size()))
    fail("{}: legacy (pre-1.6, non-zip) torch.save format is not read; re-save it with a recent torch or convert it "
         "to safetensors",
         path);
  zip_ = std::make_unique<ZipArchive>(file_->data(), file_->size(), path);
  zip_->verify_stored_entries();
  const ZipEntry* pickle = nullptr;
  for (const ZipEntry& e : zip_->entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.substr(slash) == "/data.pkl") {
      if (pickle != nullptr) fail("{}: two data.pkl entries ('{}', '{}')", path, pickle->name, e.name);
      pickle = &e;
      archive_ = e.name.substr(0, slash);
    }
  }
  if (pickle == nullptr) fail("{}: a zip archive without <name>/data.pkl is not a torch.save checkpoint", path);
  if (const ZipEntry* order = zip_->find(archive_ + "/byteorder")) {
    const std::string v = zip_->read(*order, 64);
    if (v != "little") fail("{}: tensors are stored {}-endian; only little-endian checkpoints are read", path, v);
  }
  const std::vector<TorchTensorRecord> records =
      read_torch_state_dict_pickle(zip_->read(*pickle, uint64_t{1} << 28), path + ":" + pickle->name);

  // A storage may back several tensors (tied weights, views); they must agree on its type and size.
  std::map<std::string, std::pair<std::string, int64_t>> storages;
  for (const TorchTensorRecord& r : records) {
    auto [it, inserted] = storages.emplace(r.storage_key, std::make_pair(r.storage_type, r.storage_numel));
    if (!inserted && it->second != std::make_pair(r.storage_type, r.storage_numel))
      fail("{}: storage '{}' is declared as {} of {} and as {} of {}", path, r.storage_key, it->second.first,
           it->second.second, r.storage_type, r.storage_numel);
    const std::string entry_name = archive_ + "/data/" + r.storage_key;
    const ZipEntry* data = zip_->find(entry_name);
    if (data == nullptr) fail("{}: tensor '{}' needs storage '{}', which the archive lacks", path, r.name, entry_name);
    if (data->method != 0) fail("{}: storage '{}' is compressed; torch.save stores tensors uncompressed", path, entry_name);
    const uint64_t needed = static_cast<uint64_t>(r.storage_numel) * torch_storage_element_size(r.storage_type);
    if (data->size < needed)
      fail("{}: storage '{}' holds {} bytes but {} of {} elements need {}", path, entry_name, data->size, r.storage_type,
           r.storage_numel, needed);
    bool is_float = false;
    const DType dtype = float_dtype(r.storage_type, is_float);
    if (!is_float) {
      skipped_.push_back(fmt::format("{} ({})", r.name, r.storage_type));
      continue;
    }
    TensorInfo info;
    info.name = r.name;
    info.dtype = dtype;
    info.shape = r.shape;
    info.file = path;
    entries_[r.name] = Entry{infos_.size(), data->data_offset, r.offset, r.stride};
    infos_.push_back(std::move(info));
  }
}

TorchCheckpointReader::~TorchCheckpointReader() = default;

Tensor TorchCheckpointReader::load(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail("{}: missing tensor '{}'", file_->path(), name);
  const Entry& e = it->second;
  const TensorInfo& info = infos_[e.info];
  if (row_major(info.shape, e.stride))
    return view_tensor(file_, e.offset + static_cast<uint64_t>(e.element_offset) * dtype_size(info.dtype), info);
  return gather_to_f32(file_, e.offset, e.element_offset, e.stride, info);
}

std::string TorchCheckpointReader::describe() const {
  std::string text = fmt::format("torch zip {} (pickle {}/data.pkl read without running code, {} tensors from {}/data/)",
                                 std::filesystem::path(file_->path()).filename().string(), archive_, infos_.size(),
                                 archive_);
  if (!skipped_.empty()) {
    text += fmt::format("; {} non-float tensors not loaded:", skipped_.size());
    for (const std::string& s : skipped_) text += " " + s;
  }
  return text;
}

}  // namespace baq
