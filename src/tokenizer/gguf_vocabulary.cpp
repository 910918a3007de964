// A GGUF file's vocabulary as the tokenizer files baq reads and embeds: the same readers then serve
// GGUF, Hugging Face folders and .baq files.
#include <algorithm>
#include <cctype>
#include <cmath>

#include "baq/error.hpp"
#include "baq/family.hpp"
#include "tokenizer/split_patterns.hpp"
#include "tokenizer/tokenizer_readers.hpp"

namespace baq {

namespace {

// llama.cpp's token types.
constexpr int kControl = 3, kUserDefined = 4;

int key_id(const GgufMetadata& g, const std::string& key, size_t n_tokens, const std::string& source) {
  if (!g.has(key)) return -1;
  const double v = g.number(key);
  if (!(v >= 0 && v < static_cast<double>(n_tokens)) || v != std::floor(v))
    fail("{}: metadata '{}' = {} is not a token of the {}-token vocabulary", source, key, v, n_tokens);
  return static_cast<int>(v);
}

}  // namespace

TokenizerFiles gguf_tokenizer_files(const GgufMetadata& g, const std::string& source) {
  const std::vector<std::string> tokens = g.has("tokenizer.ggml.tokens") ? g.strings("tokenizer.ggml.tokens")
                                                                         : std::vector<std::string>{};
  if (tokens.empty()) fail("{}: no embedded tokenizer; name one with --tokenizer", source);
  const std::string model = g.has("tokenizer.ggml.model") ? g.string("tokenizer.ggml.model") : "";
  std::vector<double> types = g.has("tokenizer.ggml.token_type") ? g.numbers("tokenizer.ggml.token_type")
                                                                  : std::vector<double>{};
  types.resize(tokens.size(), 1.0);
  const int bos = key_id(g, "tokenizer.ggml.bos_token_id", tokens.size(), source);
  const int eos = key_id(g, "tokenizer.ggml.eos_token_id", tokens.size(), source);
  const bool add_bos = g.has("tokenizer.ggml.add_bos_token") ? g.number("tokenizer.ggml.add_bos_token") != 0.0 : model == "llama";
  // Phi-3's chat markers swallow the whitespace after them, as its tokenizer_config.json declares;
  // a GGUF file does not carry that flag, so (like llama.cpp) it is restored by the model's name.
  std::string name = g.has("general.name") ? g.string("general.name") : "";
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  const bool phi3 = name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos;
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int type = static_cast<int>(types[i]);
    if (type != kControl && type != kUserDefined) continue;
    const std::string& t = tokens[i];
    const bool rstrip = phi3 && (type == kControl || t == "</s>") && t != "<unk>" && t != "<s>" && t != "<|endoftext|>";
    added.push_back({{"id", i}, {"content", t}, {"special", type == kControl}, {"rstrip", rstrip}});
  }

  if (model == "llama") {
    std::vector<std::string> pieces;
    for (const std::string& p : tokens) pieces.push_back(sentencepiece_piece_to_text(p));
    std::vector<float> scores;
    if (g.has("tokenizer.ggml.scores"))
      for (double v : g.numbers("tokenizer.ggml.scores")) scores.push_back(static_cast<float>(v));
    scores.resize(pieces.size(), 0.0f);
    const Llama2cTokenizer vocab(std::move(pieces), std::move(scores), source);
    nlohmann::ordered_json config = {{"add_bos_token", add_bos}};
    if (bos >= 0) config["bos_token"] = tokens[static_cast<size_t>(bos)];
    if (eos >= 0) config["eos_token"] = tokens[static_cast<size_t>(eos)];
    nlohmann::ordered_json decoder = nlohmann::ordered_json::object();
    for (const auto& a : added)
      decoder[std::to_string(a["id"].get<size_t>())] = {
          {"content", a["content"]}, {"special", a["special"]}, {"rstrip", a["rstrip"]}};
    config["added_tokens_decoder"] = decoder;
    return {{"tokenizer.bin", vocab.serialize(), source}, {"tokenizer_config.json", config.dump(), source}};
  }
  if (model != "gpt2") fail("{}: embedded tokenizer model '{}' is not supported (llama, gpt2)", source, model);

  // A vocabulary that names no pre-tokenizer predates the key: GPT-NeoX's and GPT-2's, whose
  // tokenizer.json split with GPT-2's regex (llama.cpp would fall back to its "default" set).
  const std::string pre = g.has("tokenizer.ggml.pre") ? g.string("tokenizer.ggml.pre") : "gpt-2";
  const SplitPatterns* row = find_split_patterns(pre);
  if (row == nullptr)
    fail("{}: GGUF pre-tokenizer '{}' is not supported (known: {})", source, pre, known_split_pattern_names());
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab.emplace(tokens[i], i);  // a repeated spelling keeps its first id
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  if (g.has("tokenizer.ggml.merges"))
    for (const std::string& m : g.strings("tokenizer.ggml.merges")) merges.push_back(m);
  nlohmann::ordered_json splits = nlohmann::ordered_json::array();
  for (const std::string& r : row->regexes)
    splits.push_back({{"type", "Split"}, {"pattern", {{"Regex", r}}}, {"behavior", "Isolated"}, {"invert", false}});
  splits.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}});
  nlohmann::ordered_json j = {
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", splits}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"ignore_merges", row->ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
  if (add_bos && bos >= 0) {
    const std::string name = tokens[static_cast<size_t>(bos)];
    j["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", {{{"SpecialToken", {{"id", name}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                           {"special_tokens", {{name, {{"id", name}, {"ids", {bos}}, {"tokens", {name}}}}}}};
  }
  TokenizerFiles files = {{"tokenizer.json", j.dump(), source}};
  if (eos >= 0) files.push_back({"tokenizer_config.json", nlohmann::ordered_json{{"eos_token", tokens[static_cast<size_t>(eos)]}}.dump(), source});
  return files;
}

}  // namespace baq
