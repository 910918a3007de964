#include <filesystem>

#include "baq/error.hpp"
#include "baq/io.hpp"

namespace baq {

ShardedReader::ShardedReader(const std::string& index_path, const ShardOpener& open_shard) : index_path_(index_path) {
  const nlohmann::json index = read_json_file(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail("{}: no 'weight_map' object", index_path);
  const auto folder = std::filesystem::path(index_path).parent_path();
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string()) fail("{}: weight_map entry '{}' is not a file name", index_path, name);
    const std::string shard = file.get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      fail("{}: shard name '{}' must be a plain file name", index_path, shard);
    auto [it, inserted] = shard_of_file.emplace(shard, shards_.size());
    if (inserted) shards_.push_back(open_shard((folder / shard).string()));
    if (!shards_[it->second]->contains(name))
      fail("{}: tensor '{}' is listed for {} but that shard lacks it", index_path, name, shard);
    owner_[name] = it->second;
  }
  for (const auto& shard : shards_)
    for (const auto& info : shard->tensors())
      if (owner_.count(info.name)) infos_.push_back(info);
}

Tensor ShardedReader::load(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) fail("{}: missing tensor '{}'", index_path_, name);
  return shards_[it->second]->load(name);
}

std::string ShardedReader::describe() const {
  std::string first = shards_.empty() ? "none" : shards_.front()->describe();
  return fmt::format("shard index {} ({} shards, {} tensors; first shard: {})",
                     std::filesystem::path(index_path_).filename().string(), shards_.size(), infos_.size(), first);
}

}  // namespace baq
