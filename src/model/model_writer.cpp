#include <unistd.h>

#include <filesystem>

#include "baq/error.hpp"
#include "baq/model.hpp"

namespace baq {

namespace fs = std::filesystem;

void write_model_folder(const std::string& dir, const Model& model, const Tokenizer* tokenizer,
                        const std::vector<std::pair<std::string, std::string>>& extra_files) {
  const fs::path target = fs::absolute(fs::path(dir)).lexically_normal();
  const fs::path tmp = target.parent_path() / fmt::format(".{}.tmp.{}", target.filename().string(), ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) || ec) fail("{}: cannot create the output folder ({})", tmp.string(), ec.message());
  try {
    write_file_atomically((tmp / "config.json").string(), hf_config_json(model.config()));
    std::map<std::string, std::string> metadata = {{"format", "pt"}};
    if (model.config().rope_style == RopeStyle::Interleaved && model.config().arch == Architecture::Llama)
      metadata[kRopeStyleMetadataKey] = "interleaved";
    write_safetensors((tmp / "model.safetensors").string(), model.tensors(), metadata);
    if (tokenizer != nullptr)
      for (const auto& [name, bytes] : tokenizer->files()) write_file_atomically((tmp / name).string(), bytes);
    for (const auto& [name, contents] : extra_files) write_file_atomically((tmp / name).string(), contents);
    if (fs::exists(target)) {
      if (!fs::is_directory(target)) fail("{}: exists and is not a folder", target.string());
      fs::remove_all(target);
    }
    fs::rename(tmp, target);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace baq
