// libFuzzer targets for every reader of untrusted bytes, one per format (BAQ_FUZZ_FORMAT selects it):
// .baq files, safetensors headers, config.json, tokenizer.json, GGUF and llama2.c checkpoints. Every
// input must either read or fail with baq::Error; a crash, a hang, a sanitizer report or any other
// exception is a finding. Readers take paths, so each input goes through one scratch file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "baq/baq_file.hpp"
#include "baq/error.hpp"
#include "baq/family.hpp"
#include "baq/io.hpp"
#include "baq/json.hpp"
#include "baq/tokenizer.hpp"

namespace {

const std::string& scratch_path() {
  static const std::string path = "/tmp/baq-fuzz-" + std::to_string(::getpid()) + "." BAQ_FUZZ_FORMAT;
  return path;
}

void write_scratch(const uint8_t* data, size_t size) {
  std::ofstream out(scratch_path(), std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// Reads every tensor of a source when small enough to be worth it (a hostile header may describe
// gigabytes; the reader must have refused it if the file does not hold them).
void touch(const baq::TensorSource& source) {
  for (const auto& info : source.tensors()) {
    int64_t n = 1;
    for (int64_t d : info.shape) n *= d;
    if (n > (1 << 22)) continue;
    if (info.dtype == baq::DType::Packed) {
      if (auto p = source.load_packed(info.name)) (void)baq::dequantize(*p).first_non_finite();
    } else {
      (void)source.load(info.name).first_non_finite();
    }
  }
}

void run(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string format = BAQ_FUZZ_FORMAT;
  if (format == "config") {
    (void)baq::parse_hf_config(baq::parse_json(text, "config.json"), "config.json");
  } else if (format == "tokenizer") {
    const auto tok = baq::open_tokenizer({{"tokenizer.json", std::string(text), "fuzz"}}, 0, {1, {2}});
    const auto ids = tok->encode("Hello wörld 123 <s> \xf0\x9f\x98\x80  spaces\n", true);
    (void)tok->decode(ids);
  } else {
    write_scratch(data, size);
    if (format == "baq") {
      const baq::BaqFileReader r(scratch_path());
      touch(r);
      for (const auto& rec : r.records())
        if (rec.kind == "file") (void)r.file(rec.name);
      if (r.metadata().contains("model_config")) (void)baq::model_config_from_json(r.metadata()["model_config"], "fuzz");
    } else if (format == "safetensors") {
      touch(baq::SafetensorsReader(scratch_path()));
    } else if (format == "gguf") {
      const baq::GgufReader r(scratch_path());
      (void)baq::read_gguf_config(r);
      touch(r);
    } else if (format == "llama2c") {
      touch(baq::Llama2cReader(scratch_path()));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    run(data, size);
  } catch (const baq::Error&) {
  }
  return 0;
}
