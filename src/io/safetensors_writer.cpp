#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "baq/error.hpp"
#include "baq/io.hpp"

namespace baq {

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (t->data == nullptr) fail("{}: tensor '{}' is packed and cannot be written as F32", path, name);
    for (float v : t->span())
      if (!std::isfinite(v)) fail("{}: refusing to write tensor '{}' with a non-finite value", path, name);
    const uint64_t bytes = static_cast<uint64_t>(t->numel()) * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t->shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned so readers can map it
  // Streamed tensor by tensor into a temporary file, renamed into place once complete.
  write_file_atomically(path, [&](std::ostream& out) {
    const uint64_t len = json.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    for (const auto& [name, t] : tensors)
      out.write(reinterpret_cast<const char*>(t->data), static_cast<std::streamsize>(t->numel() * 4));
  });
}

}  // namespace baq
