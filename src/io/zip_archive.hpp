#pragma once
// The central directory of a zip archive held in memory (a mapped torch.save file), zip64 included.
// torch.save stores every entry uncompressed and 64-byte aligned, so tensor storages are used in
// place; small entries (data.pkl) may also be deflated by other writers and are inflated with zlib.
// No zip library in Debian exposes where a stored entry's bytes start, which mapping needs, so the
// directory is parsed here, every size and offset checked against the archive before it is trusted.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace baq {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t data_offset = 0;  // of the entry's (possibly compressed) bytes in the archive
};

class ZipArchive {
 public:
  // `path` names the archive in errors. The bytes must outlive the archive.
  ZipArchive(const uint8_t* data, uint64_t size, std::string path);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  // Every stored entry's bytes against its CRC-32 (deflated ones are checked when read).
  void verify_stored_entries() const;
  // The entry's contents, inflated if needed and checked against its CRC-32. `limit` bounds the size
  // accepted (a lying header must not make us allocate gigabytes).
  std::string read(const ZipEntry& entry, uint64_t limit = uint64_t{1} << 30) const;
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_;
  uint64_t size_;
  std::string path_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> index_;
};

}  // namespace baq
