#include <algorithm>
#include <filesystem>


#include "baq/baq_file.hpp"
#include "baq/error.hpp"
#include "baq/json.hpp"
#include "baq/model.hpp"
#include "tokenizer/tokenizer_readers.hpp"

namespace baq {

namespace fs = std::filesystem;

namespace {

std::unique_ptr<TensorSource> open_safetensors(const std::string& path) { return std::make_unique<SafetensorsReader>(path); }
std::unique_ptr<TensorSource> open_torch(const std::string& path) { return std::make_unique<TorchCheckpointReader>(path); }

}  // namespace

LoadedModel load_model(const std::string& path, const std::string& tokenizer_path, bool need_tokenizer) {
  LoadedModel m;
  m.path = path;
  if (!fs::exists(path)) fail("{}: no such file or folder", path);
  // Hugging Face layouts take their config from config.json: the folder's, or the one beside a file.
  auto hf_config = [&](const fs::path& dir, const char* missing) {
    const fs::path config = dir / "config.json";
    if (!fs::exists(config)) fail("{}: {}", path, missing);
    m.config = read_hf_config(config.string());
    m.config_source = config.string();
    // generation_config.json's end-of-sequence ids stop generation too (Llama 3 Instruct lists
    // <|eot_id|> only there).
    const fs::path generation = dir / "generation_config.json";
    if (fs::exists(generation)) {
      const nlohmann::json g = read_json_file(generation.string());
      if (g.is_object() && g.contains("eos_token_id") && !g["eos_token_id"].is_null()) {
        const nlohmann::json& e = g["eos_token_id"];
        for (const auto& v : e.is_array() ? e : nlohmann::json::array({e})) {
          const int id = static_cast<int>(json_as_int(v, generation.string() + ": eos_token_id", 0, m.config.vocab_size - 1));
          if (std::find(m.config.eos_ids.begin(), m.config.eos_ids.end(), id) == m.config.eos_ids.end())
            m.config.eos_ids.push_back(id);
        }
      }
    }
  };
  if (fs::is_directory(path)) {
    m.folder = path;
    const fs::path dir(path);
    hf_config(dir, "no config.json in the model folder");
    if (fs::exists(dir / "model.safetensors")) {
      auto reader = std::make_unique<SafetensorsReader>((dir / "model.safetensors").string());
      if (auto it = reader->metadata().find(kRopeStyleMetadataKey);
          it != reader->metadata().end() && it->second == "interleaved")
        m.config.rope_style = RopeStyle::Interleaved;
      m.source = std::move(reader);
      m.format = "Hugging Face safetensors";
    } else if (fs::exists(dir / "model.safetensors.index.json")) {
      m.source = std::make_unique<ShardedReader>((dir / "model.safetensors.index.json").string(), open_safetensors);
      m.format = "Hugging Face sharded safetensors";
    } else if (fs::exists(dir / "pytorch_model.bin")) {
      m.source = std::make_unique<TorchCheckpointReader>((dir / "pytorch_model.bin").string());
      m.format = "Hugging Face pytorch_model.bin";
    } else if (fs::exists(dir / "pytorch_model.bin.index.json")) {
      m.source = std::make_unique<ShardedReader>((dir / "pytorch_model.bin.index.json").string(), open_torch);
      m.format = "Hugging Face sharded pytorch_model.bin";
    } else {
      fail("{}: no model.safetensors, pytorch_model.bin or their .index.json in the model folder", path);
    }
  } else {
    m.folder = fs::path(path).parent_path().string();
    if (path.ends_with(".safetensors")) {
      hf_config(fs::path(path).parent_path(), "a bare safetensors file needs config.json beside it");
      m.source = std::make_unique<SafetensorsReader>(path);
      m.format = "Hugging Face safetensors";
    } else if (is_baq_file(path)) {
      auto reader = std::make_unique<BaqFileReader>(path);
      m.config = model_config_from_json(json_field(reader->metadata(), "model_config", path + ": metadata"), path);
      m.config_source = path + " (metadata)";
      m.format = "baq packed";
      m.source = std::move(reader);
    } else if (GgufReader::looks_like(path)) {
      auto reader = std::make_unique<GgufReader>(path);
      m.config = read_gguf_config(*reader);
      // The vocabulary is the embedding's height; the head is tied when the file holds none.
      const Family& f = *m.config.family;
      const std::string embed = f.tensor(Role::Embed, 0, true);
      if (!reader->contains(embed)) fail("{}: missing tensor '{}'", path, embed);
      for (const auto& t : reader->tensors())
        if (t.name == embed && t.shape.size() == 2) m.config.vocab_size = static_cast<int>(std::min<int64_t>(t.shape[0], 1 << 25));
      m.config.tied_embeddings = !reader->contains(f.tensor(Role::Head, 0, true));
      validate_config(m.config, path);
      m.config_source = path + " (GGUF metadata)";
      m.format = "GGUF";
      m.source = std::move(reader);
    } else if (TorchCheckpointReader::looks_like(path)) {
      hf_config(fs::path(path).parent_path(), "a bare torch checkpoint needs config.json beside it");
      m.source = std::make_unique<TorchCheckpointReader>(path);
      m.format = "torch.save zip";
    } else if (Llama2cReader::looks_like(path)) {
      auto reader = std::make_unique<Llama2cReader>(path);
      m.config = reader->config();
      m.config_source = path + " (llama2.c header)";
      m.source = std::move(reader);
      m.format = "llama2.c";
    } else {
      fail("{}: unknown model format (expected a Hugging Face folder, a .safetensors file, a .baq, GGUF or torch.save "
           "file, or a llama2.c .bin)",
           path);
    }
  }
  if (m.folder.empty()) m.folder = ".";
  m.model = build_model(m.config, *m.source);
  if (need_tokenizer || !tokenizer_path.empty()) m.tokenizer = open_model_tokenizer(m, tokenizer_path);
  return m;
}

std::unique_ptr<Tokenizer> open_model_tokenizer(const LoadedModel& m, const std::string& tokenizer_path) {
  const ModelConfig& c = m.config;
  const ModelSpecials specials{c.bos_id, c.eos_ids};
  if (tokenizer_path.empty()) {
    if (const auto* g = dynamic_cast<const GgufReader*>(m.source.get()))
      return open_tokenizer(gguf_tokenizer_files(*g, m.path), c.vocab_size, specials);
    const auto* baq = dynamic_cast<const BaqFileReader*>(m.source.get());
    if (baq != nullptr && baq->metadata().contains("tokenizer_files")) {
      // Read from the file's own records, in memory: a name in the file never becomes a path.
      TokenizerFiles files;
      const nlohmann::json& names = baq->metadata()["tokenizer_files"];
      if (!names.is_array() || names.empty()) fail("{}: metadata 'tokenizer_files' is not a list of names", m.path);
      for (const auto& n : names) {
        const std::string name = json_as_string(n, m.path + ": metadata 'tokenizer_files' entry");
        files.push_back({name, baq->file("tokenizer/" + name), fmt::format("{} (embedded)", m.path)});
      }
      return open_tokenizer(files, c.vocab_size, specials);
    }
  }
  return open_tokenizer(tokenizer_path, m.folder, c.vocab_size, specials);
}

}  // namespace baq
