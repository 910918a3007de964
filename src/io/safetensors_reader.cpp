#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "io/tensor_convert.hpp"

namespace baq {

namespace {

DType parse_dtype(const std::string& s, const std::string& path, const std::string& tensor) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  fail("{}: tensor '{}' has unsupported dtype '{}' (F32, F16 and BF16 are read)", path, tensor, s);
}

}  // namespace

SafetensorsReader::SafetensorsReader(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  const uint64_t size = file_->size();
  if (size < 8) fail("{}: truncated safetensors file ({} bytes, no header)", path, size);
  uint64_t header_len = 0;
  std::memcpy(&header_len, file_->data(), 8);  // little-endian, as are the machines we run on
  if (header_len > size - 8) fail("{}: header length {} exceeds the file size {}", path, header_len, size);
  if (header_len > (uint64_t{100} << 20)) fail("{}: header length {} exceeds the format's 100 MB", path, header_len);
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;

  const nlohmann::json header =
      parse_json(std::string_view(reinterpret_cast<const char*>(file_->data()) + 8, header_len), path + " (header)");
  if (!header.is_object()) fail("{}: header is not a JSON object", path);
  std::vector<std::pair<uint64_t, uint64_t>> extents;  // [begin, end) of every tensor, to check the layout

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_object())
        for (const auto& [k, v] : entry.items())
          if (v.is_string()) metadata_[k] = v.get<std::string>();
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      fail("{}: tensor '{}' lacks dtype, shape or data_offsets", path, name);
    const auto& jd = entry["dtype"];
    const auto& js = entry["shape"];
    const auto& jo = entry["data_offsets"];
    if (!jd.is_string() || !js.is_array() || !jo.is_array() || jo.size() != 2)
      fail("{}: tensor '{}' has a malformed entry", path, name);
    TensorInfo info;
    info.name = name;
    info.file = path;
    info.dtype = parse_dtype(jd.get<std::string>(), path, name);
    uint64_t numel = 1;
    for (const auto& d : js) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        fail("{}: tensor '{}' has a negative or non-integer dimension", path, name);
      const uint64_t v = d.get<uint64_t>();
      if (v != 0 && numel > (uint64_t{1} << 62) / v) fail("{}: tensor '{}' shape overflows", path, name);
      numel *= v;
      info.shape.push_back(static_cast<int64_t>(v));
    }
    if (!jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      fail("{}: tensor '{}' has non-integer data_offsets", path, name);
    const uint64_t begin = jo[0].get<uint64_t>();
    const uint64_t end = jo[1].get<uint64_t>();
    if (begin > end || end > data_size)
      fail("{}: tensor '{}' data [{}, {}) lies outside the {} data bytes", path, name, begin, end, data_size);
    if (end - begin != numel * dtype_size(info.dtype))
      fail("{}: tensor '{}' holds {} bytes but shape {} of {} needs {}", path, name, end - begin,
           js.dump(), dtype_name(info.dtype), numel * dtype_size(info.dtype));
    index_[name] = Entry{infos_.size(), data_start + begin, end - begin};
    infos_.push_back(std::move(info));
    extents.emplace_back(begin, end);
  }
  // The format's rule: the data section is indexed whole, without holes or overlaps.
  std::sort(extents.begin(), extents.end());
  uint64_t at = 0;
  for (const auto& [begin, end] : extents) {
    if (begin < at) fail("{}: tensor data ranges overlap at byte {} of the data section", path, begin);
    if (begin > at) fail("{}: bytes {}..{} of the data section belong to no tensor", path, at, begin);
    at = end;
  }
  if (at != data_size) fail("{}: the data section holds {} bytes but the tensors cover {}", path, data_size, at);
}

Tensor SafetensorsReader::load(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: missing tensor '{}'", file_->path(), name);
  const TensorInfo& info = infos_[it->second.info];
  return view_tensor(file_, it->second.offset, info);
}

std::string SafetensorsReader::describe() const {
  return fmt::format("safetensors {} ({} tensors)", std::filesystem::path(file_->path()).filename().string(),
                     infos_.size());
}

}  // namespace baq
