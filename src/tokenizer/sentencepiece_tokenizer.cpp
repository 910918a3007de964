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
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int> SentencePieceTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> ids;
  const auto status = impl_->processor.Encode(text, &ids);
  if (!status.ok()) fail("{}: encoding failed ({})", path_, status.ToString());
  if (add_bos && bos_id() >= 0) ids.insert(ids.begin(), bos_id());
  return ids;
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
int SentencePieceTokenizer::bos_id() const { return impl_->processor.bos_id(); }
int SentencePieceTokenizer::eos_id() const { return impl_->processor.eos_id(); }

std::string SentencePieceTokenizer::describe() const {
  return fmt::format("SentencePiece {} ({} pieces)", std::filesystem::path(path_).filename().string(), vocab_size());
}

}  // namespace baq
