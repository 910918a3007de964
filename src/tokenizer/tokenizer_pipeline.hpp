#pragma once
// The Hugging Face `tokenizers` pipeline as data: normalizers, pre-tokenizers, a BPE model and a
// decoder, each a list of typed steps read from tokenizer.json (or built from vocab.json + merges.txt,
// a tiktoken rank file or a GGUF vocabulary). A component this list does not hold is refused by name
// when the file is read, never skipped.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace baq {

// A compiled PCRE2 pattern (UTF + Unicode properties), shared by the steps that use it.
class Pattern {
 public:
  Pattern(const std::string& regex, const std::string& source);
  ~Pattern();
  Pattern(const Pattern&) = delete;
  Pattern& operator=(const Pattern&) = delete;
  // [start, end) of every non-empty match, left to right.
  std::vector<std::pair<size_t, size_t>> matches(std::string_view text) const;
  const std::string& text() const { return regex_; }

 private:
  std::string regex_;
  void* code_ = nullptr;
};

// Unicode normal forms and string edits applied to the text between added tokens.
struct Normalizer {
  enum class Kind { Nfc, Nfkc, Nfd, Nfkd, Prepend, Replace, Lowercase };
  Kind kind = Kind::Nfc;
  std::string text;                   // Prepend: what; Replace: the literal pattern
  std::shared_ptr<Pattern> pattern;   // Replace with a regex
  std::string content;                // Replace: the replacement
  void apply(std::string& s) const;
};

// How a split keeps the delimiters it finds (the `tokenizers` SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizer {
  enum class Kind { Split, ByteLevel, Metaspace, WhitespaceSplit };
  Kind kind = Kind::Split;
  // Split (Digits and Punctuation are Splits on a character class).
  std::string literal;
  std::shared_ptr<Pattern> pattern;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  // ByteLevel.
  bool add_prefix_space = false;
  bool use_regex = true;
  // Metaspace: spaces become `replacement`, prepended per `prepend` ("always", "first", "never").
  std::string replacement = "\xE2\x96\x81";
  std::string prepend = "always";
  bool split = true;
  // Splits every piece; `first_segment` is whether the text started the input (Metaspace "first").
  void apply(std::vector<std::string>& pieces, bool first_segment) const;
};

// Byte-pair encoding over a vocabulary: merges by rank (`merges`), or, for tiktoken rank files,
// a pair ranked by the rank of the token it makes.
struct BpeModel {
  std::unordered_map<std::string, int> vocab;
  std::unordered_map<std::string, int> merge_rank;  // left + '\x01' + right -> rank
  size_t merges = 0;
  bool ranks_from_vocab = false;
  bool ignore_merges = false;  // a word that is itself a token is that token (Llama 3)
  bool byte_fallback = false;  // unknown characters as <0xXX> byte tokens (SentencePiece style)
  int unk_id = -1;
  bool fuse_unk = false;
  int byte_token[256];
  void index_bytes();
  void add_merge(const std::string& left, const std::string& right);
  void encode_word(std::string_view word, std::vector<int>& out) const;

 private:
  int rank(std::string_view left, std::string_view right) const;
};

// How ids become text again.
struct TokenDecoder {
  bool byte_level = false;        // map GPT-2's byte alphabet back to bytes
  std::string space_marker;       // "▁" → ' ' (SentencePiece style), empty if none
  bool byte_fallback = false;     // <0xXX> tokens are bytes
  bool strip_leading_space = false;  // the dummy prefix's space is dropped from the start of a text
};

struct TokenizerPipeline {
  std::string source;
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  BpeModel model;
  TokenDecoder decoder;
};

}  // namespace baq
