#include "baq/error.hpp"
#include "baq/model.hpp"
#include "baq/output.hpp"

namespace baq {

void write_model_folder(const std::string& dir, const Model& model, const Tokenizer* tokenizer,
                        const std::vector<std::pair<std::string, std::string>>& extra_files) {
  // Each file lands atomically; the folder is never removed or emptied (OutputFolder refuses a folder
  // baq did not write), so a failure leaves earlier outputs and unrelated files as they were.
  OutputFolder out(dir, InputSet{});
  write_file_atomically(out.file("config.json"), hf_config_json(model.config()));
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (model.config().rope_style == RopeStyle::Interleaved && model.config().rotary)
    metadata[kRopeStyleMetadataKey] = "interleaved";
  // Every tensor in F32: quantized linears dequantized (their exact values), the rest converted.
  const auto packed = model.packed_tensors();
  std::vector<Tensor> f32;
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  const auto listed = model.tensors();
  f32.reserve(listed.size());
  for (const auto& [name, t] : listed) {
    const auto it = packed.find(name);
    f32.push_back(it != packed.end() ? dequantize(*it->second) : t->to_f32());
    tensors.emplace_back(name, &f32.back());
  }
  write_safetensors(out.file("model.safetensors"), tensors, metadata);
  if (tokenizer != nullptr)
    for (const auto& f : tokenizer->files()) write_file_atomically(out.file(f.name), f.bytes);
  for (const auto& [name, contents] : extra_files) write_file_atomically(out.file(name), contents);
  out.finish();
}

}  // namespace baq
