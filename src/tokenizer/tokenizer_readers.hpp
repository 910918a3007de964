#pragma once
// Readers that turn a tokenizer file into a tokenizer: one per file kind.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "baq/tokenizer.hpp"

namespace baq {

class GgufMetadata;

// A Hugging Face tokenizer.json: its normalizer, pre-tokenizer, BPE model, added tokens and decoder;
// the BOS its post-processor prepends. Any component outside the supported list is refused by name.
std::unique_ptr<BpeTokenizer> read_tokenizer_json(const nlohmann::json& j, const std::string& source);

// vocab.json + merges.txt (or GPT-2's own names encoder.json + vocab.bpe). The pre-tokenizer comes
// from tokenizer_config.json's tokenizer_class when given (Qwen2Tokenizer: its regex and NFC), else
// from the vocabulary itself (Llama 3's, Qwen2's), else GPT-2's.
std::unique_ptr<BpeTokenizer> read_vocab_merges(std::string_view vocab, std::string_view merges,
                                                const nlohmann::json* tokenizer_config, const std::string& source);

// True when `bytes` is a tiktoken rank file (lines "base64 rank"), not a SentencePiece model.
bool looks_like_tiktoken(std::string_view bytes);
// Meta's Llama 3 tokenizer.model: ranks by line, Llama 3's split regex, the 256 special tokens after
// the ranks named by `special_tokens` (content -> id; empty: Llama 3.1's names).
std::unique_ptr<BpeTokenizer> read_tiktoken(std::string_view bytes, const nlohmann::json* special_tokens,
                                            const std::string& source);
// Llama 3.1's special tokens, as Meta's reference code names them.
nlohmann::json llama3_special_tokens(int first_id);

// A GGUF file's embedded vocabulary as the files baq keeps for it: tokenizer.json for byte-level BPE
// ("gpt2", with the pre-tokenizer llama.cpp names), tokenizer.bin + tokenizer_config.json for
// SentencePiece-style vocabularies ("llama").
TokenizerFiles gguf_tokenizer_files(const GgufMetadata& g, const std::string& source);

}  // namespace baq
