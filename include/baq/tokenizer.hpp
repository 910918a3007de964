#pragma once
// One interface, one class per kind of tokenizer model: Hugging Face `tokenizers` BPE pipelines
// (tokenizer.json, vocab.json + merges.txt, tiktoken rank files and GGUF byte-level vocabularies all
// become one), SentencePiece model files, and score-merged vocabularies (llama2.c tokenizer.bin, GGUF
// "llama" vocabularies). encode() tokenizes a whole text at once (no per-line splitting): the
// perplexity protocols tokenize the joined text once.
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

// A token matched whole in the text before the model sees it. Special ones (control tokens) only
// when the caller parses specials; the others (a vocabulary's added whitespace runs, chat markers
// declared non-special) always, as Hugging Face and llama.cpp do.
struct AddedToken {
  std::string content;
  int id = -1;
  bool special = true;
  bool lstrip = false, rstrip = false;  // absorbs the whitespace on that side
  bool single_word = false;             // only between non-word characters
};

// What encode() adds and what ends a generation, from the model's own files.
struct SpecialTokens {
  int bos = -1;
  bool add_bos = false;
  std::vector<int> eos;
};

struct TokenizerPipeline;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text`: the BOS first when `add_special` and the model's files ask for one; added tokens
  // matched whole (special ones only with `parse_special`), the text between them encoded.
  std::vector<int> encode(std::string_view text, bool add_special, bool parse_special = false) const;
  virtual std::string decode(int id) const = 0;
  // Text of a whole id sequence (a SentencePiece-style tokenizer drops the dummy prefix's space at
  // the start; a sequence keeps the spaces between pieces).
  virtual std::string decode(const std::vector<int>& ids) const {
    std::string s;
    for (int id : ids) s += decode(id);
    return s;
  }
  virtual int vocab_size() const = 0;
  // The id of a token spelled exactly `text`, -1 if none.
  virtual int token_id(std::string_view text) const = 0;
  virtual std::string describe() const = 0;

  int bos_id() const { return specials_.bos; }
  bool adds_bos() const { return specials_.add_bos && specials_.bos >= 0; }
  const std::vector<int>& eos_ids() const { return specials_.eos; }
  int eos_id() const { return specials_.eos.empty() ? -1 : specials_.eos.front(); }
  const SpecialTokens& specials() const { return specials_; }
  void set_specials(SpecialTokens s) { specials_ = std::move(s); }
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  void set_added_tokens(std::vector<AddedToken> tokens);

  // The files it was read from (a serialization when it came from a GGUF vocabulary), so a quantized
  // model can carry a copy that reads back the same.
  const TokenizerFiles& files() const { return files_; }
  void set_files(TokenizerFiles files) { files_ = std::move(files); }

 protected:
  // Appends the ids of `text`, a run between added tokens; `first` when it starts the input.
  virtual void encode_text(std::string_view text, bool first, std::vector<int>& out) const = 0;

 private:
  TokenizerFiles files_;
  SpecialTokens specials_;
  std::vector<AddedToken> added_;  // longest first
};

// llama2.c `tokenizer.bin` and GGUF "llama" vocabularies: pieces with scores; encoding = dummy-prefix
// space, code points (byte fallback to ids 3 + byte), then greedy merges of the best-scoring adjacent
// pair over the whole text.
class Llama2cTokenizer final : public Tokenizer {
 public:
  // `vocab_size` pieces (0: all the file holds); a file holding more or fewer is refused.
  Llama2cTokenizer(const std::string& path, int vocab_size);
  Llama2cTokenizer(std::string_view bytes, const std::string& source, int vocab_size);
  // From pieces (spaces as ' ') and scores already in memory, e.g. a GGUF file's vocabulary.
  Llama2cTokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::string source);
  using Tokenizer::decode;
  std::string decode(int id) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int token_id(std::string_view text) const override;
  std::string describe() const override;
  // The vocabulary in llama2.c's tokenizer.bin format.
  std::string serialize() const;

 protected:
  void encode_text(std::string_view text, bool first, std::vector<int>& out) const override;

 private:
  std::string path_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> ids_;
  int byte_ids_[256];  // the "<0xXX>" pieces
  void index_pieces();
};

// SentencePiece `tokenizer.model` through libsentencepiece.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path);
  // A serialized model proto (a tokenizer.model's bytes); `source` names it in messages.
  SentencePieceTokenizer(std::string_view bytes, const std::string& source);
  ~SentencePieceTokenizer() override;
  std::string decode(int id) const override;
  std::string decode(const std::vector<int>& ids) const override;
  int vocab_size() const override;
  int token_id(std::string_view text) const override;
  std::string describe() const override;

 protected:
  void encode_text(std::string_view text, bool first, std::vector<int>& out) const override;

 private:
  struct Impl;
  std::string path_;
  std::unique_ptr<Impl> impl_;
};

// A Hugging Face `tokenizers` BPE pipeline: normalizers, pre-tokenizers, BPE (byte-level or with
// byte fallback), decoder. Byte-level vocabularies (GPT-2, OPT, Llama 3, Qwen2, Falcon, GPT-NeoX,
// StarCoder, DeepSeek) and SentencePiece-style ones written as tokenizer.json (Llama 2, Phi-3).
class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(std::unique_ptr<TokenizerPipeline> pipeline);
  ~BpeTokenizer() override;
  using Tokenizer::decode;
  std::string decode(int id) const override;
  std::string decode(const std::vector<int>& ids) const override;
  int vocab_size() const override;  // the model's tokens and the added ones after them
  int token_id(std::string_view text) const override;
  std::string describe() const override;
  const TokenizerPipeline& pipeline() const { return *pipeline_; }

 protected:
  void encode_text(std::string_view text, bool first, std::vector<int>& out) const override;

 private:
  std::unique_ptr<TokenizerPipeline> pipeline_;
  std::vector<std::string> id_to_token_;
};

// GPT-2's pre-tokenizer regex (ByteLevel's default).
const std::string& gpt2_split_pattern();

// A SentencePiece piece with its visible space U+2581 turned into ' ' (llama2.c's spelling of pieces).
std::string sentencepiece_piece_to_text(std::string_view piece);

// The tokenizer files of a model: `explicit_path` when given (tokenizer.json, tokenizer.model of
// SentencePiece or tiktoken kind, vocab.json/encoder.json with merges.txt/vocab.bpe beside it,
// tokenizer.bin, a GGUF file, or a folder), else what the model folder holds; with the
// tokenizer_config.json, special_tokens_map.json and added_tokens.json beside it.
TokenizerFiles read_tokenizer_files(const std::string& explicit_path, const std::string& model_folder);

// What the model's config says about BOS and EOS: used where the tokenizer's own files are silent.
struct ModelSpecials {
  int bos = -1;
  std::vector<int> eos;
};

// A tokenizer from its files, whatever they were read from (disk, or a .baq file's embedded copy):
// nothing is written anywhere. Names must be plain file names. `vocab_size` is the model's (0: any):
// a tokenizer with more tokens than the model is refused.
std::unique_ptr<Tokenizer> open_tokenizer(const TokenizerFiles& files, int vocab_size, const ModelSpecials& model);

// read_tokenizer_files + open_tokenizer.
std::unique_ptr<Tokenizer> open_tokenizer(const std::string& explicit_path, const std::string& model_folder,
                                          int vocab_size, const ModelSpecials& model);

}  // namespace baq
