#pragma once
// The pre-tokenizer regexes of the byte-level vocabularies baq knows, as their tokenizer.json files
// (or llama.cpp, for GGUF vocabularies) define them: each vocabulary a row.
#include <string>
#include <vector>

namespace baq {

struct SplitPatterns {
  std::vector<std::string> names;     // GGUF tokenizer.ggml.pre values
  std::vector<std::string> regexes;   // applied in order, each isolating its matches
  bool ignore_merges = false;         // a piece that is itself a token is that token (Llama 3)
};

// Llama 3's and Qwen2's single regexes (also used for their vocab.json + merges.txt forms).
const std::string& llama3_split_regex();
const std::string& qwen2_split_regex();

// The row of a GGUF pre-tokenizer name; nullptr if unknown.
const SplitPatterns* find_split_patterns(const std::string& gguf_pre);
// The names known, for messages.
std::string known_split_pattern_names();

}  // namespace baq
