#include <map>

#include "baq/baq_file.hpp"
#include "baq/calibrate.hpp"
#include "baq/error.hpp"

namespace baq {

void save_baq(const std::string& path, const Model& model, const QuantizeRun& run, const Tokenizer* tokenizer,
              const nlohmann::json& metadata) {
  // The run's layers follow the blocks' linears in order; match each to its tensor name by identity.
  std::map<const Tensor*, const PackedLinear*> packed;
  size_t k = 0;
  for (int b = 0; b < model.n_blocks(); ++b)
    for (Linear* l : const_cast<Model&>(model).block(b).linears()) {
      if (k >= run.packed.size()) fail("{}: the quantization run has fewer layers than the model", path);
      packed[&l->weight] = &run.packed[k++];
    }
  nlohmann::json meta = metadata;
  meta["model_config"] = model_config_to_json(model.config());
  BaqFileWriter writer(path);
  size_t written = 0;
  for (const auto& [name, t] : model.tensors()) {
    if (auto it = packed.find(t); it != packed.end()) {
      writer.add_packed(name, *it->second);
      ++written;
    } else {
      writer.add_tensor(name, *t);
    }
  }
  if (written != run.packed.size()) fail("{}: not every quantized layer maps to a model tensor", path);
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
