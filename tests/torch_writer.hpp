#pragma once
// Writes torch.save-style checkpoints for tests, independently of baq's reader: pickles assembled
// opcode by opcode (so tests can also build hostile ones) and zip archives laid out as torch does
// (stored entries, 64-byte aligned data, CRC-32s, zip64 on request).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"

namespace baq::test {

class PickleBuilder {
 public:
  PickleBuilder& proto(int version = 2);
  PickleBuilder& op(uint8_t opcode);
  PickleBuilder& mark() { return op('('); }
  PickleBuilder& str(const std::string& s);       // BINUNICODE
  PickleBuilder& integer(int64_t v);              // BININT1/BININT2/BININT/LONG1 as Python picks
  PickleBuilder& global(const std::string& module, const std::string& name);  // GLOBAL
  PickleBuilder& put(uint8_t slot);               // BINPUT
  PickleBuilder& get(uint8_t slot);               // BINGET
  PickleBuilder& raw(const std::string& bytes);
  PickleBuilder& stop() { return op('.'); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

struct TorchTensorSpec {
  std::string name;
  std::string storage_type = "FloatStorage";
  std::string key;
  int64_t storage_numel = 0;
  int64_t offset = 0;
  std::vector<int64_t> shape, stride;  // stride empty: row-major
};

// The pickle torch.save writes for an OrderedDict state dict of these tensors, with the `_metadata`
// attribute set through BUILD as nn.Module.state_dict() leaves it.
std::string torch_state_dict_pickle(const std::vector<TorchTensorSpec>& tensors);

// A zip laid out like torch.save's: entries in order, stored, data 64-byte aligned.
void write_torch_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries,
                     bool zip64 = false);

// Weights (HF names) as a torch.save zip in one storage type ("FloatStorage", "HalfStorage",
// "BFloat16Storage"), one storage per tensor, under archive folder `archive`.
void write_torch_checkpoint(const std::string& path, const Weights& w, const Shapes& shapes,
                            const std::string& storage_type = "FloatStorage", const std::string& archive = "archive",
                            bool zip64 = false);

// The bytes of `values` in a storage type (F32, F16 or BF16 rounding to nearest even).
std::string storage_bytes(const std::vector<double>& values, const std::string& storage_type);

}  // namespace baq::test
