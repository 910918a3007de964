#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <climits>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/tokenizer.hpp"

namespace baq {

namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Splits a UTF-8 string into code points (each as its bytes).
std::vector<std::string> code_points(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0xF0) n = 4;
    else if (c >= 0xE0) n = 3;
    else if (c >= 0xC0) n = 2;
    n = std::min(n, s.size() - i);
    out.emplace_back(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace

struct ByteLevelBpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

const std::string& ByteLevelBpeTokenizer::gpt2_pattern() {
  static const std::string pattern =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  return pattern;
}

ByteLevelBpeTokenizer::ByteLevelBpeTokenizer(Spec spec) : spec_(std::move(spec)), regex_(std::make_unique<Regex>()) {
  // GPT-2's reversible byte -> printable code point map.
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    byte_to_unicode_[b] = utf8(printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + extra++));
    unicode_to_byte_[byte_to_unicode_[b]] = static_cast<uint8_t>(b);
  }
  int max_id = -1;
  for (const auto& [tok, id] : spec_.vocab) max_id = std::max(max_id, id);
  for (const auto& [tok, id] : spec_.added_tokens) max_id = std::max(max_id, id);
  if (max_id < 0) fail("{}: empty vocabulary", spec_.source);
  id_to_token_.resize(static_cast<size_t>(max_id) + 1);
  for (const auto& [tok, id] : spec_.vocab) {
    if (id < 0) fail("{}: negative id for token '{}'", spec_.source, tok);
    id_to_token_[static_cast<size_t>(id)] = tok;
  }
  for (const auto& [tok, id] : spec_.added_tokens) id_to_token_[static_cast<size_t>(id)] = tok;
  for (size_t r = 0; r < spec_.merges.size(); ++r)
    merge_rank_.emplace(spec_.merges[r].first + '\x01' + spec_.merges[r].second, static_cast<int>(r));
  // Longest added token first, so "<|endoftext|>" wins over a prefix of it.
  std::stable_sort(spec_.added_tokens.begin(), spec_.added_tokens.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });

  int error = 0;
  PCRE2_SIZE offset = 0;
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(spec_.pattern.c_str()), spec_.pattern.size(),
                               PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (regex_->code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(error, msg, sizeof msg);
    fail("{}: pre-tokenizer regex does not compile at {}: {}", spec_.source, offset, reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is the fallback
}

ByteLevelBpeTokenizer::~ByteLevelBpeTokenizer() = default;

void ByteLevelBpeTokenizer::encode_word(std::string_view word, std::vector<int>& out) const {
  std::vector<std::string> symbols;
  for (unsigned char b : word) symbols.push_back(byte_to_unicode_[b]);
  // GPT-2's loop: merge every occurrence of the lowest-ranked adjacent pair until none is left.
  while (symbols.size() > 1) {
    int best = INT_MAX;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merge_rank_.find(symbols[i] + '\x01' + symbols[i + 1]);
      if (it != merge_rank_.end()) best = std::min(best, it->second);
    }
    if (best == INT_MAX) break;
    const auto& [a, b] = spec_.merges[static_cast<size_t>(best)];
    std::vector<std::string> merged;
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == a && symbols[i + 1] == b) {
        merged.push_back(a + b);
        ++i;
      } else {
        merged.push_back(symbols[i]);
      }
    }
    symbols = std::move(merged);
  }
  for (const auto& s : symbols) {
    auto it = spec_.vocab.find(s);
    if (it != spec_.vocab.end()) {
      out.push_back(it->second);
    } else {  // a merge result absent from the vocabulary: fall back to its code points
      for (const auto& cp : code_points(s))
        if (auto jt = spec_.vocab.find(cp); jt != spec_.vocab.end()) out.push_back(jt->second);
    }
  }
}

void ByteLevelBpeTokenizer::encode_plain(std::string_view text, std::vector<int>& out) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE start = 0;
  while (start < text.size()) {
    const int rc = pcre2_match(regex_->code, subject, text.size(), start, 0, md, nullptr);
    if (rc < 0) {  // no further match (or invalid UTF-8): the rest is one piece
      encode_word(text.substr(start), out);
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[0] > start) encode_word(text.substr(start, ov[0] - start), out);
    if (ov[1] == ov[0]) {  // empty match: step one byte to guarantee progress
      encode_word(text.substr(ov[0], 1), out);
      start = ov[0] + 1;
      continue;
    }
    encode_word(text.substr(ov[0], ov[1] - ov[0]), out);
    start = ov[1];
  }
  pcre2_match_data_free(md);
}

std::vector<int> ByteLevelBpeTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> out;
  if (add_bos && spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  std::string prefixed;
  if (spec_.add_prefix_space && !text.empty() && text[0] != ' ') {
    prefixed.assign(1, ' ');
    prefixed.append(text);
    text = prefixed;
  }
  size_t plain_start = 0;
  for (size_t i = 0; i < text.size();) {
    bool matched = false;
    for (const auto& [tok, id] : spec_.added_tokens) {
      if (!tok.empty() && text.compare(i, tok.size(), tok) == 0) {
        encode_plain(text.substr(plain_start, i - plain_start), out);
        out.push_back(id);
        i += tok.size();
        plain_start = i;
        matched = true;
        break;
      }
    }
    if (!matched) ++i;
  }
  encode_plain(text.substr(plain_start), out);
  return out;
}

std::string ByteLevelBpeTokenizer::decode(int id) const {
  if (id < 0 || id >= vocab_size()) return {};
  const std::string& tok = id_to_token_[static_cast<size_t>(id)];
  for (const auto& [t, added] : spec_.added_tokens)
    if (added == id) return t;
  std::string bytes;
  for (const auto& cp : code_points(tok)) {
    auto it = unicode_to_byte_.find(cp);
    bytes += it != unicode_to_byte_.end() ? std::string(1, static_cast<char>(it->second)) : cp;
  }
  return bytes;
}

std::string ByteLevelBpeTokenizer::describe() const {
  return fmt::format("byte-level BPE {} ({} tokens, {} merges)", spec_.source, id_to_token_.size(),
                     spec_.merges.size());
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_vocab_merges(const std::string& vocab_json,
                                                                                const std::string& merges_txt,
                                                                                int bos_id, int eos_id) {
  auto t = from_vocab_merges_bytes(read_binary_file(vocab_json), read_binary_file(merges_txt),
                                   fmt::format("{} + {}", vocab_json, std::filesystem::path(merges_txt).filename().string()),
                                   bos_id, eos_id);
  t->set_files({{"vocab.json", t->files()[0].bytes, vocab_json}, {"merges.txt", t->files()[1].bytes, merges_txt}});
  return t;
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_vocab_merges_bytes(std::string_view vocab_bytes,
                                                                                      std::string_view merges_bytes,
                                                                                      const std::string& source,
                                                                                      int bos_id, int eos_id) {
  Spec spec;
  spec.source = source;
  const nlohmann::json vocab = parse_json(vocab_bytes, source + " (vocab.json)");
  if (!vocab.is_object()) fail("{}: vocab.json is not a JSON object", source);
  for (const auto& [tok, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24))
      fail("{}: vocab.json id of '{}' is not an integer in 0..2^24", source, tok);
    spec.vocab.emplace(tok, id.get<int>());
  }
  std::string_view text = merges_bytes;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == line.size())
      fail("{}: merges.txt line {} is not a merge 'A B'", source, line_no);
    spec.merges.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
  }
  spec.pattern = gpt2_pattern();
  spec.bos_id = bos_id;
  spec.eos_id = eos_id;
  // The special tokens these vocabularies define are matched whole, as the HF tokenizers do.
  for (const char* special : {"<|endoftext|>", "<s>", "</s>", "<pad>", "<unk>", "<mask>"})
    if (auto it = spec.vocab.find(special); it != spec.vocab.end()) spec.added_tokens.emplace_back(it->first, it->second);
  auto t = std::make_unique<ByteLevelBpeTokenizer>(std::move(spec));
  t->set_files({{"vocab.json", std::string(vocab_bytes), source}, {"merges.txt", std::string(merges_bytes), source}});
  return t;
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_tokenizer_json(const nlohmann::json& j,
                                                                                  const std::string& path,
                                                                                  int bos_id, int eos_id) {
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail("{}: no 'model' object", path);
  const auto& model = j["model"];
  if (model.value("type", "") != "BPE") fail("{}: tokenizer model type '{}' is not BPE", path, model.value("type", ""));
  if (model.value("byte_fallback", false))
    fail("{}: byte_fallback without a U+2581 normalizer or Metaspace pre-tokenizer: neither byte-level nor "
         "SentencePiece-style BPE", path);
  Spec spec;
  spec.source = path;
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("{}: model.vocab missing", path);
  for (const auto& [tok, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) fail("{}: id of '{}' is not an integer", path, tok);
    spec.vocab.emplace(tok, id.get<int>());
  }
  if (!model.contains("merges") || !model["merges"].is_array()) fail("{}: model.merges missing", path);
  for (const auto& m : model["merges"]) {
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) fail("{}: merge '{}' has no space", path, s);
      spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      fail("{}: malformed merge {}", path, m.dump());
    }
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& t : j["added_tokens"])
      if (t.is_object() && t.contains("content") && t["content"].is_string() && t.contains("id") &&
          t["id"].is_number_integer())
        spec.added_tokens.emplace_back(t["content"].get<std::string>(), t["id"].get<int>());

  // Pre-tokenizer: ByteLevel (GPT-2 regex) or a Sequence of a regex Split and ByteLevel without regex.
  spec.pattern = gpt2_pattern();
  const auto& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : nlohmann::json();
  auto apply = [&](const nlohmann::json& p) {
    const std::string type = p.value("type", "");
    if (type == "ByteLevel") {
      spec.add_prefix_space = p.value("add_prefix_space", false);
    } else if (type == "Split" && p.contains("pattern") && p["pattern"].contains("Regex")) {
      spec.pattern = p["pattern"]["Regex"].get<std::string>();
    } else {
      fail("{}: pre-tokenizer '{}' is not supported for byte-level BPE", path, type);
    }
  };
  if (pre.is_object() && pre.value("type", "") == "Sequence") {
    for (const auto& p : pre["pretokenizers"]) apply(p);
  } else if (pre.is_object()) {
    apply(pre);
  } else {
    fail("{}: no byte-level pre-tokenizer", path);
  }
  spec.bos_id = bos_id;
  spec.eos_id = eos_id;
  return std::make_unique<ByteLevelBpeTokenizer>(std::move(spec));
}

}  // namespace baq
