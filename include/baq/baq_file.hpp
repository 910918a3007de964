#pragma once
// The .baq container: a quantized model in one file, small on disk and read without a second copy.
//
//   0   "BAQFILE\0"                              magic
//   8   u32 version (4)
//   12  u32 CRC32 of the JSON header
//   16  u64 offset of the JSON header
//   24  u64 length of the JSON header
//   32  u32 CRC32 of bytes 0..32
//   36  zero bytes up to 64
//   64  records, each at a 64-byte aligned offset, each with its own CRC32, zero bytes between:
//       "f32"    a full-precision tensor, little-endian F32
//       "bf16"   the same when every value is a BF16 number (lossless, half the bytes)
//       "packed" a quantized linear: [levels u8 × cols, when they differ] [min F16 × rows·groups]
//                [max F16 × rows·groups] [one-level column values F16] [group u32 × cols, act-order]
//                [row-wise mixed-radix code words u64 × rows·words_per_row], sections 8-aligned
//       "file"   an embedded file (the tokenizer)
//   H   JSON: {"metadata": {...}, "records": [{name, kind, offset, bytes, crc32, ...}]} at a 64-byte
//       aligned offset after the last record; the file ends where it ends.
// The header comes last so records stream out as they are made (one block at a time, never the whole
// model in memory). Every byte is covered: the prologue, records and header by their CRCs, padding
// checked to be zero, nothing after the header. Every size and offset is checked against the file and
// against the sizes the record's own fields imply; a record's CRC is verified before it is used.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "baq/io.hpp"
#include "baq/output.hpp"
#include "baq/pack.hpp"

namespace baq {

inline constexpr uint32_t kBaqFileVersion = 4;  // 3: header last, prologue CRC, padding checked; 4: radix rows bit-granular

// Writes a .baq file record by record through an AtomicFile: nothing is in place until finish().
class BaqFileWriter {
 public:
  explicit BaqFileWriter(const std::string& path);
  // Stored as "bf16" when every value is a BF16 number, else "f32".
  void add_tensor(const std::string& name, const Tensor& t);
  void add_packed(const std::string& name, const PackedLinear& p);
  void add_file(const std::string& name, const std::string& bytes);
  // Writes the header with `metadata` and moves the file into place.
  void finish(const nlohmann::json& metadata);
  uint64_t bytes_written() const { return at_; }

 private:
  void add_record(const std::string& name, const std::string& kind, const std::string& bytes,
                  nlohmann::ordered_json fields);
  AtomicFile file_;
  uint64_t at_ = 0;
  nlohmann::ordered_json records_ = nlohmann::ordered_json::array();
  std::vector<std::string> names_;
};

// A packed linear as a "packed" record: its bytes, and its fields in `fields`. The same record carries
// a solved linear between ranks of an MPI run.
std::string packed_record(const PackedLinear& p, nlohmann::ordered_json& fields);
// A "packed" record back (every size and code checked, as for a file's); `what` names it in errors.
PackedLinear packed_from_record(const nlohmann::json& fields, const uint8_t* bytes, uint64_t n, const std::string& what);

// True when the file starts with the .baq magic.
bool is_baq_file(const std::string& path);

class BaqFileReader final : public TensorSource {
 public:
  struct Record {
    std::string name, kind;
    uint64_t offset = 0, bytes = 0;
    uint32_t crc = 0;
    nlohmann::json fields;
  };
  explicit BaqFileReader(const std::string& path);
  const nlohmann::json& metadata() const { return metadata_; }
  const std::vector<Record>& records() const { return records_; }
  uint64_t file_size() const { return file_->size(); }

  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  bool contains(const std::string& name) const override;
  // F32 tensors as stored; packed linears dequantized.
  Tensor load(const std::string& name) const override;
  std::string describe() const override;

  PackedLinear packed(const std::string& name) const;
  std::shared_ptr<const PackedLinear> load_packed(const std::string& name) const override;
  std::string file(const std::string& name) const;

 private:
  const Record& record(const std::string& name, const char* kind) const;
  const uint8_t* verified(const Record& r) const;  // the record's bytes after its CRC check

  std::shared_ptr<MappedFile> file_;
  nlohmann::json metadata_;
  std::vector<Record> records_;
  std::map<std::string, size_t> index_;  // name -> record
  std::vector<TensorInfo> infos_;
};

}  // namespace baq
