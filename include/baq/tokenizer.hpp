#pragma once
// One interface, one class per tokenizer format. encode() tokenizes a whole text at once (no
// per-line splitting): the perplexity protocols tokenize the joined text once.
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace baq {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text`, with the tokenizer's BOS first when `add_bos` and the format has one.
  virtual std::vector<int> encode(std::string_view text, bool add_bos) const = 0;
  virtual std::string decode(int id) const = 0;
  // Text of a whole id sequence (SentencePiece drops the leading space of a lone piece; a sequence
  // keeps the spaces between pieces).
  virtual std::string decode(const std::vector<int>& ids) const {
    std::string s;
    for (int id : ids) s += decode(id);
    return s;
  }
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;  // -1 when the format has none
  virtual int eos_id() const = 0;
  virtual std::string describe() const = 0;
  // The files it was read from, so a quantized model folder can carry a copy.
  virtual std::vector<std::string> source_files() const = 0;
  // (file name, bytes) to store beside a quantized model so the tokenizer reads back: the source files
  // (llama2.c tokenizers under the name tokenizer.bin), or a serialization when it came from memory.
  virtual std::vector<std::pair<std::string, std::string>> files() const;
};

// llama2.c `tokenizer.bin`: pieces with scores; encoding = dummy-prefix space, code points (byte
// fallback to ids 3 + byte), then greedy merges of the best-scoring adjacent pair over the whole text.
class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(const std::string& path, int vocab_size);
  // From pieces (spaces as ' ') and scores already in memory, e.g. a GGUF file's vocabulary.
  Llama2cTokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::string source);
  // A Hugging Face tokenizer.json of a SentencePiece BPE vocabulary (byte_fallback, ▁ for spaces):
  // merges by rank instead of score, added tokens matched whole before encoding.
  // `json` is the parsed file, `path` names it.
  static std::unique_ptr<Llama2cTokenizer> from_sentencepiece_json(const nlohmann::json& json, const std::string& path);
  std::vector<int> encode(std::string_view text, bool add_bos) const override;
  using Tokenizer::decode;
  std::string decode(int id) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }
  std::string describe() const override;
  std::vector<std::string> source_files() const override { return from_memory_ ? std::vector<std::string>{} : std::vector<std::string>{path_}; }
  std::vector<std::pair<std::string, std::string>> files() const override;

 private:
  bool from_memory_ = false;
  std::string path_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> ids_;
  std::unordered_map<std::string, float> pair_score_;       // left + '\x01' + right -> −rank (tokenizer.json)
  std::vector<std::pair<std::string, int>> added_tokens_;   // longest first
  int byte_ids_[256];                                       // the "<0xXX>" pieces
  void index_pieces();
  void encode_segment(std::string_view text, bool dummy_prefix, std::vector<int>& tokens) const;
};

// SentencePiece `tokenizer.model` through libsentencepiece.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path);
  ~SentencePieceTokenizer() override;
  std::vector<int> encode(std::string_view text, bool add_bos) const override;
  std::string decode(int id) const override;
  std::string decode(const std::vector<int>& ids) const override;
  int vocab_size() const override;
  int bos_id() const override;
  int eos_id() const override;
  std::string describe() const override;
  std::vector<std::string> source_files() const override { return {path_}; }

 private:
  struct Impl;
  std::string path_;
  std::unique_ptr<Impl> impl_;
};

// Byte-level BPE (GPT-2, OPT, RoBERTa): bytes mapped to printable code points, a pre-tokenizer regex,
// merges applied by rank. From `tokenizer.json` or from `vocab.json` + `merges.txt`.
class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  struct Spec {
    std::string source;  // what was read, for describe() and errors
    std::vector<std::string> files;
    std::unordered_map<std::string, int> vocab;
    std::vector<std::pair<std::string, std::string>> merges;  // in rank order
    std::vector<std::pair<std::string, int>> added_tokens;    // matched literally before BPE
    std::string pattern;                                      // pre-tokenizer regex (PCRE2)
    bool add_prefix_space = false;
    int bos_id = -1;
    int eos_id = -1;
  };
  explicit ByteLevelBpeTokenizer(Spec spec);
  ~ByteLevelBpeTokenizer() override;
  // `json` is the parsed tokenizer.json, `path` names it.
  static std::unique_ptr<ByteLevelBpeTokenizer> from_tokenizer_json(const nlohmann::json& json, const std::string& path,
                                                                    int bos_id, int eos_id);
  static std::unique_ptr<ByteLevelBpeTokenizer> from_vocab_merges(const std::string& vocab_json,
                                                                  const std::string& merges_txt, int bos_id,
                                                                  int eos_id);
  std::vector<int> encode(std::string_view text, bool add_bos) const override;
  using Tokenizer::decode;
  std::string decode(int id) const override;
  int vocab_size() const override { return static_cast<int>(id_to_token_.size()); }
  int bos_id() const override { return spec_.bos_id; }
  int eos_id() const override { return spec_.eos_id; }
  std::string describe() const override;
  std::vector<std::string> source_files() const override { return spec_.files; }

  static const std::string& gpt2_pattern();

 private:
  void encode_word(std::string_view word, std::vector<int>& out) const;
  void encode_plain(std::string_view text, std::vector<int>& out) const;

  struct Regex;
  Spec spec_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int> merge_rank_;  // key: left + '\x01' + right
  std::unique_ptr<Regex> regex_;
  std::string byte_to_unicode_[256];
  std::unordered_map<std::string, uint8_t> unicode_to_byte_;
};

// A SentencePiece piece with its visible space U+2581 turned into ' ' (llama2.c's spelling of pieces).
std::string sentencepiece_piece_to_text(std::string_view piece);

// Finds and opens the tokenizer for a model: `explicit_path` when given (tokenizer.bin, .model,
// tokenizer.json), else what the model folder holds. `vocab_size` is the model's, for checks.
std::unique_ptr<Tokenizer> open_tokenizer(const std::string& explicit_path, const std::string& model_folder,
                                          int vocab_size, int bos_id, int eos_id);

}  // namespace baq
