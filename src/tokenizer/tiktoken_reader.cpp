#include <fmt/format.h>

#include "baq/error.hpp"
#include "baq/json.hpp"
#include "tokenizer/split_patterns.hpp"
#include "tokenizer/tokenizer_pipeline.hpp"
#include "tokenizer/tokenizer_readers.hpp"
#include "tokenizer/utf8.hpp"

namespace baq {

namespace {

bool base64_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '='; }

// Standard base64 (with padding), false on anything else.
bool decode_base64(std::string_view in, std::string& out) {
  out.clear();
  if (in.size() % 4 != 0) return false;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      if (in[i + k] == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else {
        if (pad > 0 || (v[k] = value(in[i + k])) < 0) return false;
      }
    }
    const uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += static_cast<char>(n >> 16);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(n & 0xFF);
  }
  return true;
}

}  // namespace

bool looks_like_tiktoken(std::string_view bytes) {
  const size_t eol = bytes.find('\n');
  const std::string_view line = bytes.substr(0, eol);
  const size_t space = line.find(' ');
  if (eol == std::string_view::npos || space == std::string_view::npos || space == 0 || space + 1 == line.size())
    return false;
  for (size_t i = 0; i < space; ++i)
    if (!base64_char(line[i])) return false;
  for (size_t i = space + 1; i < line.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(line[i]))) return false;
  return true;
}

nlohmann::json llama3_special_tokens(int first_id) {
  // Meta's llama-models tokenizer.py (Llama 3.1 onwards): twelve named tokens, then reserved ones.
  const char* named[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                         "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                         "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
                         "<|image|>"};
  nlohmann::json j = nlohmann::json::object();
  int id = first_id;
  for (const char* n : named) j[n] = id++;
  for (int i = 0; i < 256 - 12; ++i) j[fmt::format("<|reserved_special_token_{}|>", 2 + i)] = id++;
  return j;
}

std::unique_ptr<BpeTokenizer> read_tiktoken(std::string_view bytes, const nlohmann::json* special_tokens,
                                            const std::string& source) {
  auto p = std::make_unique<TokenizerPipeline>();
  p->source = source + " (tiktoken)";
  BpeModel& m = p->model;
  const ByteAlphabet& alphabet = ByteAlphabet::get();
  std::string token;
  int ranks = 0;
  for (size_t line_no = 1; !bytes.empty(); ++line_no) {
    const size_t eol = bytes.find('\n');
    std::string_view line = bytes.substr(0, eol);
    bytes = eol == std::string_view::npos ? std::string_view{} : bytes.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    int rank = -1;
    if (space != std::string_view::npos && decode_base64(line.substr(0, space), token) && !token.empty()) {
      const std::string_view digits = line.substr(space + 1);
      if (!digits.empty() && digits.size() <= 8 && digits.find_first_not_of("0123456789") == std::string_view::npos)
        rank = std::stoi(std::string(digits));
    }
    if (rank < 0) fail("{}: line {} is not 'base64 rank'", source, line_no);
    if (!m.vocab.emplace(alphabet.map(token), rank).second) fail("{}: line {} repeats a token", source, line_no);
    ranks = std::max(ranks, rank + 1);
  }
  if (ranks == 0) fail("{}: no ranks", source);
  m.ranks_from_vocab = true;
  m.ignore_merges = true;
  PreTokenizer split;
  split.kind = PreTokenizer::Kind::Split;
  split.pattern = std::make_shared<Pattern>(llama3_split_regex(), source);
  p->pre_tokenizers.push_back(std::move(split));
  PreTokenizer byte_level;
  byte_level.kind = PreTokenizer::Kind::ByteLevel;
  byte_level.use_regex = false;
  p->pre_tokenizers.push_back(std::move(byte_level));
  p->decoder.byte_level = true;

  const nlohmann::json names = special_tokens != nullptr ? *special_tokens : llama3_special_tokens(ranks);
  if (!names.is_object()) fail("{}: special tokens are not an object of name -> id", source);
  std::vector<AddedToken> added;
  SpecialTokens specials;
  for (const auto& [name, id] : names.items()) {
    const int i = static_cast<int>(json_as_int(id, source + ": special token '" + name + "'", ranks, 1 << 24));
    added.push_back({name, i, true});
    if (name == "<|begin_of_text|>") {
      specials.bos = i;
      specials.add_bos = true;
    }
    if (name == "<|end_of_text|>" || name == "<|eot_id|>" || name == "<|eom_id|>") specials.eos.push_back(i);
  }
  std::sort(specials.eos.begin(), specials.eos.end());
  auto tok = std::make_unique<BpeTokenizer>(std::move(p));
  tok->set_added_tokens(std::move(added));
  tok->set_specials(specials);
  return tok;
}

}  // namespace baq
