#include <map>

#include "baq/baq_file.hpp"
#include "baq/calibrate.hpp"
#include "baq/error.hpp"

namespace baq {

namespace {

void write_tensors(BaqFileWriter& writer, const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                   const std::map<std::string, const PackedLinear*>& packed, std::set<std::string>& written) {
  for (const auto& [name, t] : tensors) {
    if (!written.insert(name).second) continue;  // a tied head is the embedding, written once
    const auto it = packed.find(name);
    if (it != packed.end())
      writer.add_packed(name, *it->second);
    else
      writer.add_tensor(name, *t);
  }
}

}  // namespace

BaqModelWriter::BaqModelWriter(const std::string& path, const Model& model)
    : writer_(std::make_unique<BaqFileWriter>(path)) {
  (void)model;
}

BaqModelWriter::~BaqModelWriter() = default;

void BaqModelWriter::add_block(Block& block) {
  std::map<std::string, const PackedLinear*> packed;
  for (const Linear* l : block.linears())
    if (l->packed != nullptr) packed[l->tensor] = l->packed.get();
  write_tensors(*writer_, block.tensors(), packed, written_);
  // Written for good: the packed layers and the mapped pages of the block go.
  for (Linear* l : block.linears()) {
    l->packed.reset();
    l->weight.release_pages();
  }
}

void BaqModelWriter::finish(const Model& model, const Tokenizer* tokenizer, const nlohmann::json& metadata) {
  write_tensors(*writer_, model.tensors(), model.packed_tensors(), written_);
  nlohmann::json meta = metadata;
  meta["model_config"] = model_config_to_json(model.config());
  if (tokenizer != nullptr) {
    auto& names = meta["tokenizer_files"] = nlohmann::json::array();
    for (const auto& f : tokenizer->files()) {
      writer_->add_file("tokenizer/" + f.name, f.bytes);
      names.push_back(f.name);
    }
  }
  writer_->finish(meta);
}

void save_baq(const std::string& path, const Model& model, const Tokenizer* tokenizer, const nlohmann::json& metadata) {
  for (int b = 0; b < model.n_blocks(); ++b)
    for (Linear* l : const_cast<Model&>(model).block(b).linears())
      if (l->packed == nullptr) fail("{}: layer blocks.{}.{} is not quantized", path, b, l->name);
  BaqFileWriter writer(path);
  std::set<std::string> written;
  const auto packed = model.packed_tensors();
  for (int b = 0; b < model.n_blocks(); ++b) write_tensors(writer, model.block(b).tensors(), packed, written);
  write_tensors(writer, model.tensors(), packed, written);
  nlohmann::json meta = metadata;
  meta["model_config"] = model_config_to_json(model.config());
  if (tokenizer != nullptr) {
    auto& names = meta["tokenizer_files"] = nlohmann::json::array();
    for (const auto& f : tokenizer->files()) {
      writer.add_file("tokenizer/" + f.name, f.bytes);
      names.push_back(f.name);
    }
  }
  writer.finish(meta);
}

}  // namespace baq
