#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "baq/baq_file.hpp"
#include "baq/error.hpp"
#include "baq/family.hpp"
#include "baq/io.hpp"
#include "baq/model.hpp"
#include "baq/tokenizer.hpp"
#include "commands.hpp"

namespace baq::cli {

namespace {

struct TokenizeArgs {
  std::string source, prompt, file;
  bool bos = true, parse_special = true;
};

// A model (its tokenizer with the BOS/EOS its config names) or a tokenizer file on its own.
std::unique_ptr<Tokenizer> tokenizer_of(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) fail("{}: no such file or folder", path);
  if (fs::is_directory(path)) {
    if (!fs::exists(fs::path(path) / "config.json")) return open_tokenizer(path, path, 0, {});
    const ModelConfig c = read_hf_config((fs::path(path) / "config.json").string());
    return open_tokenizer("", path, c.vocab_size, {c.bos_id, c.eos_ids});
  }
  if (is_baq_file(path) || Llama2cReader::looks_like(path) ||
      (path.ends_with(".safetensors") && fs::exists(fs::path(path).parent_path() / "config.json")))
    return std::move(load_model(path, "").tokenizer);
  return open_tokenizer(path, "", 0, {});
}

}  // namespace

Command add_tokenize_command(CLI::App& app) {
  auto* sub = app.add_subcommand("tokenize", "Print the token ids of a text on one line (llama-tokenize --ids)");
  auto a = std::make_shared<TokenizeArgs>();
  sub->add_option("MODEL", a->source,
                  "A model (as every command takes) or a tokenizer file: tokenizer.json, tokenizer.model "
                  "(SentencePiece or tiktoken), vocab.json/encoder.json with merges beside it, tokenizer.bin, GGUF")
      ->required();
  auto* prompt = sub->add_option("--prompt,-p", a->prompt, "Text to tokenize");
  auto* file = sub->add_option("--file,-f", a->file, "File whose text to tokenize");
  prompt->excludes(file);
  sub->add_flag("!--no-bos", a->bos, "Do not add the BOS the model's files ask for");
  sub->add_flag("--parse-special,!--no-parse-special", a->parse_special,
                "Match special-token spellings in the text as their tokens (default: on)");
  return {sub, [a, prompt, file] {
            if (prompt->count() == 0 && file->count() == 0) fail("tokenize needs --prompt TEXT or --file F");
            const std::unique_ptr<Tokenizer> tok = tokenizer_of(a->source);
            const std::string text = file->count() > 0 ? read_text_file(a->file) : a->prompt;
            fmt::print("{}\n", fmt::join(tok->encode(text, a->bos, a->parse_special), " "));
          }};
}

}  // namespace baq::cli
