#include <filesystem>

#include "baq/error.hpp"
#include "baq/io.hpp"

#include <nlohmann/json.hpp>
#include "baq/tokenizer.hpp"

namespace baq {

namespace fs = std::filesystem;

std::vector<std::pair<std::string, std::string>> Tokenizer::files() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& f : source_files()) {
    MappedFile mf(f);
    out.emplace_back(fs::path(f).filename().string(), std::string(reinterpret_cast<const char*>(mf.data()), mf.size()));
  }
  return out;
}

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& explicit_path, const std::string& model_folder,
                                          int vocab_size, int bos_id, int eos_id) {
  std::unique_ptr<Tokenizer> tok;
  auto by_extension = [&](const std::string& path) -> std::unique_ptr<Tokenizer> {
    const std::string name = fs::path(path).filename().string();
    if (name.ends_with(".json")) {
      // SentencePiece-style BPE (byte fallback and ▁ for spaces, in the normalizer or a Metaspace
      // pre-tokenizer) or byte-level BPE (the GPT-2 family).
      const nlohmann::json j = read_json_file(path);
      const bool byte_fallback = j.contains("model") && j["model"].is_object() && j["model"].value("byte_fallback", false);
      const std::string spaces = (j.contains("normalizer") ? j["normalizer"].dump() : "") +
                                 (j.contains("pre_tokenizer") ? j["pre_tokenizer"].dump() : "");
      if (byte_fallback && (spaces.find("\u2581") != std::string::npos || spaces.find("\xE2\x96\x81") != std::string::npos ||
                            spaces.find("Metaspace") != std::string::npos))
        return Llama2cTokenizer::from_sentencepiece_json(j, path);
      return ByteLevelBpeTokenizer::from_tokenizer_json(j, path, bos_id, eos_id);
    }
    if (name.ends_with(".model")) return std::make_unique<SentencePieceTokenizer>(path);
    if (name.ends_with(".bin")) return std::make_unique<Llama2cTokenizer>(path, vocab_size);
    fail("{}: unknown tokenizer format (expected tokenizer.json, *.model or llama2.c tokenizer.bin)", path);
  };
  if (!explicit_path.empty()) {
    if (fs::is_directory(explicit_path)) return open_tokenizer("", explicit_path, vocab_size, bos_id, eos_id);
    tok = by_extension(explicit_path);
  } else {
    const fs::path folder(model_folder);
    if (fs::exists(folder / "tokenizer.json")) {
      tok = by_extension((folder / "tokenizer.json").string());
    } else if (fs::exists(folder / "tokenizer.model")) {
      tok = by_extension((folder / "tokenizer.model").string());
    } else if (fs::exists(folder / "vocab.json") && fs::exists(folder / "merges.txt")) {
      tok = ByteLevelBpeTokenizer::from_vocab_merges((folder / "vocab.json").string(),
                                                     (folder / "merges.txt").string(), bos_id, eos_id);
    } else if (fs::exists(folder / "tokenizer.bin")) {
      tok = by_extension((folder / "tokenizer.bin").string());
    } else {
      fail("{}: no tokenizer found (tokenizer.json, tokenizer.model, vocab.json + merges.txt or tokenizer.bin); "
           "name one with --tokenizer",
           model_folder);
    }
  }
  if (vocab_size > 0 && tok->vocab_size() > vocab_size)
    fail("{}: tokenizer has {} tokens but the model only {}", tok->describe(), tok->vocab_size(), vocab_size);
  return tok;
}

}  // namespace baq
