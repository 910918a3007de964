#include <sentencepiece_processor.h>

#include <filesystem>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/tokenizer.hpp"

namespace baq {

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path)
    : SentencePieceTokenizer(read_binary_file(path), path) {}

SentencePieceTokenizer::SentencePieceTokenizer(std::string_view bytes, const std::string& source)
    : path_(source), impl_(std::make_unique<Impl>()) {
  const auto status = impl_->processor.LoadFromSerializedProto(bytes);
  if (!status.ok()) fail("{}: not a SentencePiece model ({})", source, status.ToString());
  set_files({{"tokenizer.model", std::string(bytes), source}});
  // Control pieces (<s>, </s>, [INST] in Mistral's v3 model) are never produced from text by
  // SentencePiece itself: they are the added tokens matched when specials are parsed.
  std::vector<AddedToken> controls;
  for (int id = 0; id < impl_->processor.GetPieceSize(); ++id)
    if (impl_->processor.IsControl(id)) controls.push_back({impl_->processor.IdToPiece(id), id, true});
  set_added_tokens(std::move(controls));
  // SentencePiece models (Llama 2, Mistral) prepend their BOS unless their tokenizer_config says otherwise.
  const int bos = impl_->processor.bos_id(), eos = impl_->processor.eos_id();
  set_specials({bos, bos >= 0, eos >= 0 ? std::vector<int>{eos} : std::vector<int>{}});
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

void SentencePieceTokenizer::encode_text(std::string_view text, bool, std::vector<int>& out) const {
  std::vector<int> ids;
  const auto status = impl_->processor.Encode(text, &ids);
  if (!status.ok()) fail("{}: encoding failed ({})", path_, status.ToString());
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(int id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return impl_->processor.DecodeIds({id});
}

std::string SentencePieceTokenizer::decode(const std::vector<int>& ids) const {
  std::vector<int> valid;
  for (int id : ids)
    if (id >= 0 && id < vocab_size()) valid.push_back(id);
  return impl_->processor.DecodeIds(valid);
}

int SentencePieceTokenizer::vocab_size() const { return impl_->processor.GetPieceSize(); }

int SentencePieceTokenizer::token_id(std::string_view text) const {
  const int id = impl_->processor.PieceToId(text);
  return id >= 0 && impl_->processor.IdToPiece(id) == text ? id : -1;
}

std::string SentencePieceTokenizer::describe() const {
  return fmt::format("SentencePiece {} ({} pieces)", std::filesystem::path(path_).filename().string(), vocab_size());
}

}  // namespace baq
