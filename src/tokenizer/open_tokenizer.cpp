#include <filesystem>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/json.hpp"
#include "baq/tokenizer.hpp"

namespace baq {

namespace fs = std::filesystem;

namespace {

TokenizerFile read_one(const fs::path& path) {
  return {path.filename().string(), read_binary_file(path.string()), path.string()};
}

const TokenizerFile* find(const TokenizerFiles& files, const std::string& name) {
  for (const auto& f : files)
    if (f.name == name) return &f;
  return nullptr;
}

bool plain_name(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos && n.find('\\') == std::string::npos &&
         n.find('\0') == std::string::npos;
}

}  // namespace

TokenizerFiles read_tokenizer_files(const std::string& explicit_path, const std::string& model_folder) {
  if (!explicit_path.empty() && !fs::is_directory(explicit_path)) {
    const fs::path p(explicit_path);
    if (!fs::exists(p)) fail("{}: cannot open: no such file", explicit_path);
    TokenizerFiles files = {read_one(p)};
    // vocab.json names a pair: merges.txt is read from beside it.
    if (p.filename() == "vocab.json") {
      const fs::path merges = p.parent_path() / "merges.txt";
      if (!fs::exists(merges)) fail("{}: vocab.json needs merges.txt beside it", explicit_path);
      files.push_back(read_one(merges));
    }
    return files;
  }
  const fs::path folder(explicit_path.empty() ? model_folder : explicit_path);
  if (fs::exists(folder / "tokenizer.json")) return {read_one(folder / "tokenizer.json")};
  if (fs::exists(folder / "tokenizer.model")) return {read_one(folder / "tokenizer.model")};
  if (fs::exists(folder / "vocab.json") && fs::exists(folder / "merges.txt"))
    return {read_one(folder / "vocab.json"), read_one(folder / "merges.txt")};
  if (fs::exists(folder / "tokenizer.bin")) return {read_one(folder / "tokenizer.bin")};
  fail("{}: no tokenizer found (tokenizer.json, tokenizer.model, vocab.json + merges.txt or tokenizer.bin); "
       "name one with --tokenizer",
       folder.string());
}

std::unique_ptr<Tokenizer> open_tokenizer(const TokenizerFiles& files, int vocab_size, int bos_id, int eos_id) {
  if (files.empty()) fail("no tokenizer files");
  for (const auto& f : files)
    if (!plain_name(f.name)) fail("{}: tokenizer file name '{}' is not a plain file name", f.origin, f.name);
  const TokenizerFile& first = files.front();
  std::unique_ptr<Tokenizer> tok;
  if (first.name.ends_with(".json") && first.name != "vocab.json") {
    // SentencePiece-style BPE (byte fallback and ▁ for spaces, in the normalizer or a Metaspace
    // pre-tokenizer) or byte-level BPE (the GPT-2 family).
    const nlohmann::json j = parse_json(first.bytes, first.origin);
    const bool byte_fallback = j.contains("model") && j["model"].is_object() && j["model"].value("byte_fallback", false);
    const std::string spaces = (j.contains("normalizer") ? j["normalizer"].dump() : "") +
                               (j.contains("pre_tokenizer") ? j["pre_tokenizer"].dump() : "");
    if (byte_fallback && (spaces.find("\xE2\x96\x81") != std::string::npos || spaces.find("Metaspace") != std::string::npos))
      tok = Llama2cTokenizer::from_sentencepiece_json(j, first.origin);
    else
      tok = ByteLevelBpeTokenizer::from_tokenizer_json(j, first.origin, bos_id, eos_id);
  } else if (first.name == "vocab.json") {
    const TokenizerFile* merges = find(files, "merges.txt");
    if (merges == nullptr) fail("{}: vocab.json needs merges.txt", first.origin);
    tok = ByteLevelBpeTokenizer::from_vocab_merges_bytes(first.bytes, merges->bytes, first.origin, bos_id, eos_id);
  } else if (first.name.ends_with(".model")) {
    tok = std::make_unique<SentencePieceTokenizer>(first.bytes, first.origin);
  } else if (first.name.ends_with(".bin")) {
    tok = std::make_unique<Llama2cTokenizer>(first.bytes, first.origin, vocab_size);
  } else {
    fail("{}: unknown tokenizer format (expected tokenizer.json, *.model, vocab.json + merges.txt or llama2.c "
         "tokenizer.bin)",
         first.origin);
  }
  // Stored under the names a model folder uses for this format, so a copy written beside a quantized
  // model (or into a .baq) is found again by name.
  TokenizerFiles named = files;
  if (first.name.ends_with(".bin")) named.front().name = "tokenizer.bin";
  else if (first.name.ends_with(".model")) named.front().name = "tokenizer.model";
  else if (first.name.ends_with(".json") && first.name != "vocab.json") named.front().name = "tokenizer.json";
  tok->set_files(std::move(named));
  if (vocab_size > 0 && tok->vocab_size() > vocab_size)
    fail("{}: tokenizer has {} tokens but the model only {} (a tokenizer of another model?)", tok->describe(),
         tok->vocab_size(), vocab_size);
  return tok;
}

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& explicit_path, const std::string& model_folder,
                                          int vocab_size, int bos_id, int eos_id) {
  return open_tokenizer(read_tokenizer_files(explicit_path, model_folder), vocab_size, bos_id, eos_id);
}

}  // namespace baq
