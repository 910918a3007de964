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

// One file a tokenizer was read from: its plain name (as a model folder holds it), its bytes, and
// where it came from (a path on disk, or "embedded in X").
struct TokenizerFile {
  std::string name, bytes, origin;
};
using TokenizerFiles = std::vector<TokenizerFile>;

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
  // The files it was read from (a serialization in llama2.c's format when it came from a GGUF
  // vocabulary), so a quantized model can carry a copy that reads back the same.
  const TokenizerFiles& files() const { return files_; }
  void set_files(TokenizerFiles files) { files_ = std::move(files); }

 private:
  TokenizerFiles files_;
};

// llama2.c `tokenizer.bin`: pieces with scores; encoding = dummy-prefix space, code points (byte
// fallback to ids 3 + byte), then greedy merges of the best-scoring adjacent pair over the whole text.
class Llama2cTokenizer final : public Tokenizer {
 public:
  // `vocab_size` pieces (0: all the file holds); a file holding more or fewer is refused.
  Llama2cTokenizer(const std::string& path, int vocab_size);
  Llama2cTokenizer(std::string_view bytes, const std::string& source, int vocab_size);
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
  // The vocabulary in llama2.c's tokenizer.bin format.
  std::string serialize() const;

 private:
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
  // A serialized model proto (a tokenizer.model's bytes); `source` names it in messages.
  SentencePieceTokenizer(std::string_view bytes, const std::string& source);
  ~SentencePieceTokenizer() override;
  std::vector<int> encode(std::string_view text, bool add_bos) const override;
  std::string decode(int id) const override;
  std::string decode(const std::vector<int>& ids) const override;
  int vocab_size() const override;
  int bos_id() const override;
  int eos_id() const override;
  std::string describe() const override;

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
  // The same from the two files' bytes; `source` names them in messages.
  static std::unique_ptr<ByteLevelBpeTokenizer> from_vocab_merges_bytes(std::string_view vocab_json,
                                                                        std::string_view merges_txt,
                                                                        const std::string& source, int bos_id, int eos_id);
  std::vector<int> encode(std::string_view text, bool add_bos) const override;
  using Tokenizer::decode;
  std::string decode(int id) const override;
  int vocab_size() const override { return static_cast<int>(id_to_token_.size()); }
  int bos_id() const override { return spec_.bos_id; }
  int eos_id() const override { return spec_.eos_id; }
  std::string describe() const override;

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

// The tokenizer files of a model: `explicit_path` when given (tokenizer.bin, .model, tokenizer.json,
// vocab.json with merges.txt beside it, or a folder), else what the model folder holds.
TokenizerFiles read_tokenizer_files(const std::string& explicit_path, const std::string& model_folder);

// A tokenizer from its files, whatever they were read from (disk, or a .baq file's embedded copy):
// nothing is written anywhere. Names must be plain file names. `vocab_size` is the model's: a
// tokenizer with more tokens than the model is refused.
std::unique_ptr<Tokenizer> open_tokenizer(const TokenizerFiles& files, int vocab_size, int bos_id, int eos_id);

// read_tokenizer_files + open_tokenizer.
std::unique_ptr<Tokenizer> open_tokenizer(const std::string& explicit_path, const std::string& model_folder,
                                          int vocab_size, int bos_id, int eos_id);

}  // namespace baq
