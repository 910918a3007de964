// libFuzzer target: any bytes, taken as a torch.save zip when they start with "PK" (the archive's
// data.pkl is then unpickled) and as a bare data.pkl otherwise. Every input must either parse or fail
// with baq::Error; a crash, a sanitizer report, a leak or any other exception is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "baq/error.hpp"
#include "io/torch_pickle.hpp"
#include "io/zip_archive.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    std::string pickle;
    if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
      const baq::ZipArchive zip(data, size, "fuzz.zip");
      for (const baq::ZipEntry& e : zip.entries())
        if (e.name.ends_with("/data.pkl")) pickle = zip.read(e, size_t{1} << 24);
    } else {
      pickle.assign(reinterpret_cast<const char*>(data), size);
    }
    const auto tensors = baq::read_torch_state_dict_pickle(pickle, "fuzz.pkl");
    for (const auto& t : tensors) (void)baq::torch_storage_element_size(t.storage_type);
  } catch (const baq::Error&) {
  }
  return 0;
}
