#include "baq/error.hpp"
#include "baq/json.hpp"
#include "tokenizer/split_patterns.hpp"
#include "tokenizer/tokenizer_pipeline.hpp"
#include "tokenizer/tokenizer_readers.hpp"

namespace baq {

namespace {

// Vocabularies recognised by their size and a probe token, for files that come without a
// tokenizer_config.json naming their class (llama.cpp identifies pre-tokenizers the same way, by the
// vocabulary rather than a declared name).
struct KnownVocabulary {
  const char* name;
  size_t size;
  const char* probe;
  int probe_id;
  const std::string& (*regex)();
  bool nfc, ignore_merges;
};
const KnownVocabulary kKnown[] = {
    {"Llama 3", 128000, "indow", 1000, llama3_split_regex, false, true},
    {"Qwen2", 151643, "atus", 1000, qwen2_split_regex, true, false},
};

}  // namespace

std::unique_ptr<BpeTokenizer> read_vocab_merges(std::string_view vocab_bytes, std::string_view merges_bytes,
                                                const nlohmann::json* config, const std::string& source) {
  auto p = std::make_unique<TokenizerPipeline>();
  p->source = source;
  BpeModel& m = p->model;
  const nlohmann::json vocab = parse_json(vocab_bytes, source + " (vocabulary)");
  if (!vocab.is_object()) fail("{}: the vocabulary is not a JSON object", source);
  for (const auto& [tok, id] : vocab.items())
    m.vocab.emplace(tok, static_cast<int>(json_as_int(id, source + ": vocabulary id of '" + tok + "'", 0, 1 << 24)));
  std::string_view text = merges_bytes;
  for (size_t line_no = 1; !text.empty(); ++line_no) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == line.size())
      fail("{}: merges line {} is not a merge 'A B'", source, line_no);
    m.add_merge(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
  }

  const std::string cls = config != nullptr ? json_string_or(*config, "tokenizer_class", source, "") : "";
  const KnownVocabulary* known = nullptr;
  if (cls.starts_with("Qwen2Tokenizer")) {
    known = &kKnown[1];
  } else if (cls.empty()) {
    for (const KnownVocabulary& k : kKnown) {
      auto it = m.vocab.find(k.probe);
      if (m.vocab.size() == k.size && it != m.vocab.end() && it->second == k.probe_id) known = &k;
    }
  }
  PreTokenizer byte_level;
  byte_level.kind = PreTokenizer::Kind::ByteLevel;
  if (known != nullptr) {
    if (known->nfc) p->normalizers.push_back({Normalizer::Kind::Nfc, {}, nullptr, {}});
    PreTokenizer split;
    split.kind = PreTokenizer::Kind::Split;
    split.pattern = std::make_shared<Pattern>(known->regex(), source);
    p->pre_tokenizers.push_back(std::move(split));
    byte_level.use_regex = false;
    m.ignore_merges = known->ignore_merges;
    p->source += fmt::format(" ({})", known->name);
  } else {
    byte_level.add_prefix_space = config != nullptr && json_bool_or(*config, "add_prefix_space", source, false);
  }
  p->pre_tokenizers.push_back(std::move(byte_level));
  p->decoder.byte_level = true;

  // Without a tokenizer_config.json the special tokens these vocabularies define are their added tokens.
  std::vector<AddedToken> added;
  for (const char* special : {"<|endoftext|>", "<s>", "</s>", "<pad>", "<unk>", "<mask>"})
    if (auto it = m.vocab.find(special); it != m.vocab.end()) added.push_back({special, it->second, true});
  auto tok = std::make_unique<BpeTokenizer>(std::move(p));
  tok->set_added_tokens(std::move(added));
  return tok;
}

}  // namespace baq
