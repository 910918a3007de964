#pragma once
// The pickle inside a torch.save'd state dict (`data.pkl`), read by a restricted interpreter that
// knows only what such a pickle uses: containers, numbers, strings, persistent storage ids, and the
// globals collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.<Type>Storage. Any other
// global (os.system, builtins.eval, subprocess.Popen, ...) or object-building opcode is refused by
// name; nothing is ever called or imported. Nesting, mark depth and memo size are bounded.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace baq {

struct TorchTensorRecord {
  std::string name;
  std::string storage_type;  // "FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", ...
  std::string storage_key;   // the storage's file name under `<archive>/data/`
  int64_t storage_numel = 0;
  int64_t offset = 0;  // in elements
  std::vector<int64_t> shape, stride;
};

// Bytes per element of a torch storage type name (as in TorchTensorRecord::storage_type).
int torch_storage_element_size(const std::string& storage_type);

inline constexpr int kMaxPickleDepth = 64;

// The state dict's tensors in pickle order. `source` names the pickle in errors (which are baq::Error).
// Every tensor's extent is checked to lie inside its storage's declared element count.
std::vector<TorchTensorRecord> read_torch_state_dict_pickle(std::string_view pickle, const std::string& source);

}  // namespace baq
