#include <filesystem>

#include <unistd.h>

#include "baq/baq_file.hpp"
#include "baq/error.hpp"
#include "baq/model.hpp"

namespace baq {

namespace fs = std::filesystem;

namespace {

// The vocabulary a GGUF file embeds: SentencePiece-style ("llama": pieces with ▁ for spaces and
// scores, encoded by llama2.c's greedy merges) or byte-level BPE ("gpt2": tokens and merges).
std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufReader& g, const std::string& path) {
  if (g.tokenizer_tokens.empty()) fail("{}: no embedded tokenizer; name one with --tokenizer", path);
  const std::string source = fs::path(path).filename().string() + " (embedded)";
  if (g.tokenizer_model == "llama") {
    std::vector<std::string> pieces;
    for (const std::string& p : g.tokenizer_tokens) pieces.push_back(sentencepiece_piece_to_text(p));
    std::vector<float> scores = g.tokenizer_scores;
    scores.resize(pieces.size(), 0.0f);
    return std::make_unique<Llama2cTokenizer>(std::move(pieces), std::move(scores), source);
  }
  if (g.tokenizer_model == "gpt2") {
    ByteLevelBpeTokenizer::Spec spec;
    spec.source = source;
    for (size_t i = 0; i < g.tokenizer_tokens.size(); ++i) spec.vocab.emplace(g.tokenizer_tokens[i], static_cast<int>(i));
    for (const std::string& m : g.tokenizer_merges) {
      const size_t sp = m.find(' ');
      if (sp == std::string::npos) fail("{}: merge '{}' has no space", path, m);
      spec.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
    spec.pattern = ByteLevelBpeTokenizer::gpt2_pattern();
    spec.bos_id = g.config().bos_id;
    spec.eos_id = g.config().eos_id;
    return std::make_unique<ByteLevelBpeTokenizer>(std::move(spec));
  }
  fail("{}: embedded tokenizer model '{}' is not supported (llama, gpt2)", path, g.tokenizer_model);
}

}  // namespace

LoadedModel load_model(const std::string& path, const std::string& tokenizer_path, bool need_tokenizer) {
  LoadedModel m;
  m.path = path;
  std::string folder;
  if (!fs::exists(path)) fail("{}: no such file or folder", path);
  if (fs::is_directory(path)) {
    folder = path;
    const fs::path dir(path);
    if (!fs::exists(dir / "config.json")) fail("{}: no config.json in the model folder", path);
    m.config = read_hf_config((dir / "config.json").string());
    if (fs::exists(dir / "model.safetensors")) {
      auto reader = std::make_unique<SafetensorsReader>((dir / "model.safetensors").string());
      if (auto it = reader->metadata().find(kRopeStyleMetadataKey);
          it != reader->metadata().end() && it->second == "interleaved")
        m.config.rope_style = RopeStyle::Interleaved;
      m.source = std::move(reader);
      m.format = "Hugging Face safetensors";
    } else if (fs::exists(dir / "model.safetensors.index.json")) {
      m.source = std::make_unique<ShardedSafetensorsReader>((dir / "model.safetensors.index.json").string());
      m.format = "Hugging Face sharded safetensors";
    } else {
      fail("{}: no model.safetensors or model.safetensors.index.json in the model folder", path);
    }
  } else if (path.ends_with(".safetensors")) {
    folder = fs::path(path).parent_path().string();
    const auto config = fs::path(path).parent_path() / "config.json";
    if (!fs::exists(config)) fail("{}: a bare safetensors file needs config.json beside it", path);
    m.config = read_hf_config(config.string());
    m.source = std::make_unique<SafetensorsReader>(path);
    m.format = "Hugging Face safetensors";
  } else if (is_baq_file(path)) {
    folder = fs::path(path).parent_path().string();
    auto reader = std::make_unique<BaqFileReader>(path);
    if (!reader->metadata().contains("config")) fail("{}: .baq metadata has no model config", path);
    m.config = parse_hf_config(reader->metadata()["config"], path);
    if (reader->metadata().value("rope_style", "") == "interleaved") m.config.rope_style = RopeStyle::Interleaved;
    m.format = "baq packed";
    if (need_tokenizer && tokenizer_path.empty() && reader->metadata().contains("tokenizer_files")) {
      // Tokenizer libraries read files: unpack the embedded copy into a private folder for the load.
      const fs::path tmp = fs::temp_directory_path() / fmt::format("baq-tok-{}-{}", ::getpid(), reinterpret_cast<uintptr_t>(reader.get()));
      fs::create_directories(tmp);
      try {
        for (const auto& name : reader->metadata()["tokenizer_files"])
          write_file_atomically((tmp / name.get<std::string>()).string(), reader->file("tokenizer/" + name.get<std::string>()));
        m.tokenizer = open_tokenizer("", tmp.string(), m.config.vocab_size, m.config.bos_id, m.config.eos_id);
      } catch (...) {
        fs::remove_all(tmp);
        throw;
      }
      fs::remove_all(tmp);
    }
    m.source = std::move(reader);
  } else if (GgufReader::looks_like(path)) {
    folder = fs::path(path).parent_path().string();
    auto reader = std::make_unique<GgufReader>(path);
    m.config = reader->config();
    m.format = "GGUF";
    if (need_tokenizer && tokenizer_path.empty()) m.tokenizer = gguf_tokenizer(*reader, path);
    m.source = std::move(reader);
  } else if (Llama2cReader::looks_like(path)) {
    folder = fs::path(path).parent_path().string();
    auto reader = std::make_unique<Llama2cReader>(path);
    m.config = reader->config();
    m.source = std::move(reader);
    m.format = "llama2.c";
  } else {
    fail("{}: unknown model format (expected a Hugging Face folder, a .safetensors file, a .baq or GGUF file, or a llama2.c .bin)",
         path);
  }
  m.model = build_model(m.config, *m.source);
  if ((need_tokenizer || !tokenizer_path.empty()) && !m.tokenizer)
    m.tokenizer = open_tokenizer(tokenizer_path, folder.empty() ? "." : folder, m.config.vocab_size, m.config.bos_id,
                                 m.config.eos_id);
  return m;
}

}  // namespace baq
