#include <fmt/format.h>

#include "baq/tokenizer.hpp"
#include "tokenizer/tokenizer_pipeline.hpp"
#include "tokenizer/utf8.hpp"

namespace baq {

BpeTokenizer::BpeTokenizer(std::unique_ptr<TokenizerPipeline> pipeline) : pipeline_(std::move(pipeline)) {
  int max_id = -1;
  for (const auto& [tok, id] : pipeline_->model.vocab) max_id = std::max(max_id, id);
  id_to_token_.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [tok, id] : pipeline_->model.vocab) id_to_token_[static_cast<size_t>(id)] = tok;
  pipeline_->model.index_bytes();
}

BpeTokenizer::~BpeTokenizer() = default;

void BpeTokenizer::encode_text(std::string_view text, bool first, std::vector<int>& out) const {
  std::string s(text);
  for (const Normalizer& n : pipeline_->normalizers) n.apply(s);
  std::vector<std::string> pieces = {std::move(s)};
  for (const PreTokenizer& p : pipeline_->pre_tokenizers) p.apply(pieces, first);
  for (const std::string& piece : pieces) pipeline_->model.encode_word(piece, out);
}

int BpeTokenizer::vocab_size() const {
  int n = static_cast<int>(id_to_token_.size());
  for (const AddedToken& t : added_tokens()) n = std::max(n, t.id + 1);
  return n;
}

int BpeTokenizer::token_id(std::string_view text) const {
  for (const AddedToken& t : added_tokens())
    if (t.content == text) return t.id;
  auto it = pipeline_->model.vocab.find(std::string(text));
  return it == pipeline_->model.vocab.end() ? -1 : it->second;
}

std::string BpeTokenizer::decode(int id) const { return decode(std::vector<int>{id}); }

std::string BpeTokenizer::decode(const std::vector<int>& ids) const {
  const TokenDecoder& d = pipeline_->decoder;
  std::string text;
  for (int id : ids) {
    const AddedToken* added = nullptr;
    for (const AddedToken& t : added_tokens())
      if (t.id == id) added = &t;
    if (added != nullptr) {
      text += added->content;
      continue;
    }
    if (id < 0 || id >= static_cast<int>(id_to_token_.size())) continue;
    const std::string& tok = id_to_token_[static_cast<size_t>(id)];
    if (d.byte_level) {
      text += ByteAlphabet::get().unmap(tok);
    } else if (d.byte_fallback && tok.size() == 6 && tok.starts_with("<0x") && tok.back() == '>') {
      text += static_cast<char>(std::stoi(tok.substr(3, 2), nullptr, 16));
    } else if (!d.space_marker.empty()) {
      for (size_t at = 0; at < tok.size();) {
        if (tok.compare(at, d.space_marker.size(), d.space_marker) == 0) {
          text += ' ';
          at += d.space_marker.size();
        } else {
          text += tok[at++];
        }
      }
    } else {
      text += tok;
    }
  }
  if (d.strip_leading_space && text.starts_with(' ')) text.erase(0, 1);
  return text;
}

std::string BpeTokenizer::describe() const {
  const TokenizerPipeline& p = *pipeline_;
  return fmt::format("{} BPE {} ({} tokens, {} merges{})", p.decoder.byte_level ? "byte-level" : "SentencePiece-style",
                     p.source, vocab_size(), p.model.ranks_from_vocab ? p.model.vocab.size() : p.model.merges,
                     p.model.ranks_from_vocab ? " by rank" : "");
}

}  // namespace baq
