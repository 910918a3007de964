#pragma once
// A model family is a row: its Hugging Face architecture names, its GGUF architecture, the name of
// every tensor in both namings, and the readers of its config.json fields and GGUF metadata. Readers,
// the model builder, the writer, `info` and calibration all consult the row; none of them spells a
// tensor name or branches on a family. Adding an architecture is adding a row (and, when its block
// computes something new, teaching the one transformer block that option).
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "baq/model_config.hpp"

namespace baq {

// What a tensor is for. Per-layer roles take the layer index.
enum class Role {
  Embed, Positions, ProjectIn, ProjectOut, FinalNorm, Head, RopeFreqs,
  AttnNorm, PostAttnNorm, MlpNorm, PostMlpNorm,
  Q, K, V, Qkv, O, Gate, Up, GateUp, Down,
};

// Reads one config.json: typed access that records every key it reads, so that a key nobody read
// (and that is not known to leave the math alone) is refused by name instead of silently ignored.
class ConfigFields {
 public:
  ConfigFields(const nlohmann::json& j, std::string source);
  const std::string& source() const { return source_; }
  bool has(const std::string& key);  // present and not null (marks it read)
  int integer(const std::string& key, int lo, int hi);
  int integer_or(const std::string& key, int lo, int hi, int fallback);
  double number_or(const std::string& key, double fallback);
  bool boolean_or(const std::string& key, bool fallback);
  std::string string_or(const std::string& key, const std::string& fallback);
  const nlohmann::json& raw(const std::string& key);  // marks it read
  // Marks keys whose value does not change the math for this family.
  void harmless(std::initializer_list<const char*> keys);
  // Refuses every key nobody read that is not harmless.
  void refuse_unread() const;

 private:
  const nlohmann::json& j_;
  std::string source_;
  std::set<std::string> read_;
};

// The metadata of a GGUF file as the family readers see it.
class GgufMetadata {
 public:
  virtual ~GgufMetadata() = default;
  virtual bool has(const std::string& key) const = 0;
  virtual double number(const std::string& key) const = 0;       // refuses a missing or non-numeric key
  virtual std::string string(const std::string& key) const = 0;  // refuses a missing or non-string key
  virtual std::vector<double> numbers(const std::string& key) const = 0;  // an array of numbers
  virtual std::vector<std::string> strings(const std::string& key) const = 0;  // an array of strings
  virtual const std::string& path() const = 0;
  // A small F32 tensor read whole (rope_freqs), or empty when absent.
  virtual std::vector<float> small_tensor(const std::string& name) const = 0;
};

struct Family {
  std::string name;                           // "llama", "qwen2", ...
  std::vector<std::string> hf_architectures;  // "LlamaForCausalLM", ...
  std::vector<std::string> hf_model_types;    // "llama", ...
  std::string gguf_arch;                      // "llama", ... or empty: llama.cpp writes none
  // Module names (no ".weight"/".bias"), "{}" standing for the layer index; absent roles are not
  // part of the family. Hugging Face names first, GGUF second.
  std::map<Role, std::pair<std::string, std::string>> modules;
  // Fills `c` from config.json (architecture already matched) / from GGUF metadata.
  std::function<void(ConfigFields&, ModelConfig&)> read_hf;
  std::function<void(const GgufMetadata&, ModelConfig&)> read_gguf;

  bool has(Role role) const { return modules.count(role) != 0; }
  // "model.layers.3.self_attn.q_proj.weight" for (Q, 3, HuggingFace, "weight").
  std::string tensor(Role role, int layer, bool gguf, const char* suffix = "weight") const;
};

const std::vector<Family>& families();
const Family& family_named(const std::string& name);
// The family of a config.json (architectures[0], else model_type), or null.
const Family* family_for_hf(const std::string& architecture, const std::string& model_type);
const Family* family_for_gguf(const std::string& arch);
// Every architecture name accepted, for messages.
std::string supported_architectures();

// Reads a Hugging Face `config.json` into a ModelConfig through its family's row.
ModelConfig read_hf_config(const std::string& path);
ModelConfig parse_hf_config(const nlohmann::json& config, const std::string& source);
// A config.json of `config` that read_hf_config reads back (the family's architecture name and keys).
std::string hf_config_json(const ModelConfig& config);
// The ModelConfig of a GGUF file's metadata through its family's row.
ModelConfig read_gguf_config(const GgufMetadata& metadata);

}  // namespace baq
