#include <algorithm>
#include <filesystem>
#include <fstream>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/json.hpp"
#include "baq/tokenizer.hpp"
#include "tokenizer/tokenizer_readers.hpp"

namespace baq {

namespace fs = std::filesystem;

namespace {

TokenizerFile read_one(const fs::path& path, const std::string& name) {
  return {name, read_binary_file(path.string()), path.string()};
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

// The files beside a tokenizer that say which tokens are special and what encode() adds.
void add_sidecars(const fs::path& folder, bool tiktoken, TokenizerFiles& files) {
  for (const char* name : {"tokenizer_config.json", "added_tokens.json"})
    if (fs::is_regular_file(folder / name)) files.push_back(read_one(folder / name, name));
  if (tiktoken && fs::is_regular_file(folder / "special_tokens.json"))
    files.push_back(read_one(folder / "special_tokens.json", "special_tokens.json"));
}

// vocab.json/encoder.json with merges.txt/vocab.bpe beside it, under the names baq keeps.
bool add_vocab_merges(const fs::path& folder, const fs::path& vocab, TokenizerFiles& files) {
  for (const char* merges : {"merges.txt", "vocab.bpe"}) {
    if (fs::is_regular_file(folder / merges)) {
      files.push_back(read_one(vocab, "vocab.json"));
      files.push_back(read_one(folder / merges, "merges.txt"));
      return true;
    }
  }
  return false;
}

bool is_tiktoken_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::string head(256, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return looks_like_tiktoken(head);
}

// A token named in tokenizer_config.json: a string, {"content": ...}, or null.
int config_token(const nlohmann::json& config, const char* key, const Tokenizer& tok, const std::string& source) {
  if (!config.contains(key) || config[key].is_null()) return -1;
  const nlohmann::json& v = config[key];
  const std::string text = v.is_object() ? json_string(v, "content", source + ": " + key) : json_as_string(v, source + ": " + key);
  const int id = tok.token_id(text);
  if (id < 0) fail("{}: {} '{}' is not a token of the vocabulary", source, key, text);
  return id;
}

}  // namespace

TokenizerFiles read_tokenizer_files(const std::string& explicit_path, const std::string& model_folder) {
  TokenizerFiles files;
  if (!explicit_path.empty() && !fs::is_directory(explicit_path)) {
    const fs::path p(explicit_path);
    if (!fs::exists(p)) fail("{}: cannot open: no such file", explicit_path);
    if (GgufReader::looks_like(explicit_path)) {
      const GgufReader g(explicit_path);
      return gguf_tokenizer_files(g, explicit_path);
    }
    const std::string name = p.filename().string();
    const fs::path folder = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    bool tiktoken = false;
    if (name == "vocab.json" || name == "encoder.json") {
      if (!add_vocab_merges(folder, p, files))
        fail("{}: {} needs merges.txt (or vocab.bpe) beside it", explicit_path, name);
    } else if (name.ends_with(".json")) {
      files.push_back(read_one(p, "tokenizer.json"));
    } else if (name.ends_with(".model") || name.find(".model.") != std::string::npos) {  // Mistral's .model.v1
      tiktoken = is_tiktoken_file(p);
      files.push_back(read_one(p, "tokenizer.model"));
    } else if (name.ends_with(".bin")) {
      files.push_back(read_one(p, "tokenizer.bin"));
    } else {
      fail("{}: unknown tokenizer file (expected tokenizer.json, a .model (SentencePiece or tiktoken), vocab.json or "
           "encoder.json with merges beside it, a llama2.c tokenizer.bin, or a GGUF file)",
           explicit_path);
    }
    add_sidecars(folder, tiktoken, files);
    return files;
  }
  const fs::path folder(explicit_path.empty() ? model_folder : explicit_path);
  bool tiktoken = false;
  if (fs::is_regular_file(folder / "tokenizer.json")) {
    files.push_back(read_one(folder / "tokenizer.json", "tokenizer.json"));
  } else if (fs::is_regular_file(folder / "tokenizer.model")) {
    tiktoken = is_tiktoken_file(folder / "tokenizer.model");
    files.push_back(read_one(folder / "tokenizer.model", "tokenizer.model"));
  } else if ((fs::is_regular_file(folder / "vocab.json") && add_vocab_merges(folder, folder / "vocab.json", files)) ||
             (fs::is_regular_file(folder / "encoder.json") && add_vocab_merges(folder, folder / "encoder.json", files))) {
  } else if (fs::is_regular_file(folder / "tokenizer.bin")) {
    files.push_back(read_one(folder / "tokenizer.bin", "tokenizer.bin"));
  } else {
    fail("{}: no tokenizer found (tokenizer.json, tokenizer.model, vocab.json + merges.txt, encoder.json + vocab.bpe or "
         "tokenizer.bin); name one with --tokenizer",
         folder.string());
  }
  add_sidecars(folder, tiktoken, files);
  return files;
}

std::unique_ptr<Tokenizer> open_tokenizer(const TokenizerFiles& files, int vocab_size, const ModelSpecials& model) {
  if (files.empty()) fail("no tokenizer files");
  for (const auto& f : files)
    if (!plain_name(f.name)) fail("{}: tokenizer file name '{}' is not a plain file name", f.origin, f.name);
  const TokenizerFile* config_file = find(files, "tokenizer_config.json");
  nlohmann::json config;
  if (config_file != nullptr) {
    config = parse_json(config_file->bytes, config_file->origin);
    if (!config.is_object()) fail("{}: not a JSON object", config_file->origin);
  }
  std::unique_ptr<Tokenizer> tok;
  SpecialTokens defaults;  // what the format implies when its files say nothing
  if (const TokenizerFile* f = find(files, "tokenizer.json")) {
    tok = read_tokenizer_json(parse_json(f->bytes, f->origin), f->origin);
    defaults = tok->specials();
  } else if (const TokenizerFile* v = find(files, "vocab.json")) {
    const TokenizerFile* m = find(files, "merges.txt");
    if (m == nullptr) fail("{}: vocab.json needs merges.txt", v->origin);
    tok = read_vocab_merges(v->bytes, m->bytes, config_file != nullptr ? &config : nullptr,
                            fmt::format("{} + merges", v->origin));
    // GPT-2-style vocabularies add a BOS only where the model's config names one (OPT's </s>).
    defaults = {model.bos, model.bos >= 0, {}};
  } else if (const TokenizerFile* t = find(files, "tokenizer.model")) {
    if (looks_like_tiktoken(t->bytes.substr(0, 256))) {
      nlohmann::json names;
      const TokenizerFile* s = find(files, "special_tokens.json");
      if (s != nullptr) names = parse_json(s->bytes, s->origin);
      tok = read_tiktoken(t->bytes, s != nullptr ? &names : nullptr, t->origin);
      defaults = tok->specials();
    } else {
      tok = std::make_unique<SentencePieceTokenizer>(t->bytes, t->origin);
      defaults = tok->specials();
    }
  } else if (const TokenizerFile* b = find(files, "tokenizer.bin")) {
    tok = std::make_unique<Llama2cTokenizer>(b->bytes, b->origin, config_file != nullptr ? 0 : vocab_size);
    defaults = tok->specials();
  } else {
    fail("{}: unknown tokenizer files (expected tokenizer.json, tokenizer.model, vocab.json + merges.txt or tokenizer.bin)",
         files.front().origin);
  }

  // Added tokens re-declared by tokenizer_config.json and added_tokens.json.
  std::vector<AddedToken> added = tok->added_tokens();
  auto declare = [&](AddedToken t) {
    auto it = std::find_if(added.begin(), added.end(), [&](const AddedToken& a) { return a.id == t.id; });
    if (it != added.end()) *it = std::move(t);
    else added.push_back(std::move(t));
  };
  if (config_file != nullptr && config.contains("added_tokens_decoder")) {
    const std::string what = config_file->origin + ": added_tokens_decoder";
    const nlohmann::json& d = config["added_tokens_decoder"];
    if (!d.is_object()) fail("{} is not an object", what);
    for (const auto& [key, t] : d.items()) {
      AddedToken a;
      if (key.empty() || key.size() > 8 || key.find_first_not_of("0123456789") != std::string::npos)
        fail("{}: key '{}' is not a token id", what, key);
      a.id = std::stoi(key);
      a.content = json_string(t, "content", what + " " + key);
      a.special = json_bool_or(t, "special", what + " " + key, true);
      a.lstrip = json_bool_or(t, "lstrip", what + " " + key, false);
      a.rstrip = json_bool_or(t, "rstrip", what + " " + key, false);
      a.single_word = json_bool_or(t, "single_word", what + " " + key, false);
      declare(std::move(a));
    }
  }
  if (const TokenizerFile* f = find(files, "added_tokens.json")) {
    const nlohmann::json j = parse_json(f->bytes, f->origin);
    if (!j.is_object()) fail("{}: not an object of token -> id", f->origin);
    for (const auto& [content, id] : j.items()) {
      const int i = static_cast<int>(json_as_int(id, f->origin + ": '" + content + "'", 0, 1 << 24));
      if (std::none_of(added.begin(), added.end(), [&](const AddedToken& a) { return a.id == i; }))
        declare({content, i, true});
    }
  }
  tok->set_added_tokens(std::move(added));

  // BOS and EOS: tokenizer_config.json first, then the tokenizer's own files, then the model's config.
  SpecialTokens s = defaults;
  if (config_file != nullptr) {
    const std::string& src = config_file->origin;
    if (config.contains("add_bos_token")) s.add_bos = json_bool(config, "add_bos_token", src);
    if (config.contains("bos_token")) s.bos = config_token(config, "bos_token", *tok, src);
    if (const int eos = config_token(config, "eos_token", *tok, src); eos >= 0) s.eos.insert(s.eos.begin(), eos);
  }
  if (s.bos < 0 && !(config_file != nullptr && config.contains("bos_token"))) s.bos = model.bos;
  for (int e : model.eos) s.eos.push_back(e);
  std::vector<int> eos;
  for (int e : s.eos)
    if (e >= 0 && std::find(eos.begin(), eos.end(), e) == eos.end()) eos.push_back(e);
  s.eos = std::move(eos);
  tok->set_specials(s);

  tok->set_files(files);
  if (vocab_size > 0 && tok->vocab_size() > vocab_size)
    fail("{}: tokenizer has {} tokens but the model only {} (a tokenizer of another model?)", tok->describe(),
         tok->vocab_size(), vocab_size);
  return tok;
}

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& explicit_path, const std::string& model_folder,
                                          int vocab_size, const ModelSpecials& model) {
  return open_tokenizer(read_tokenizer_files(explicit_path, model_folder), vocab_size, model);
}

}  // namespace baq
