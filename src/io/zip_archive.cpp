#include "io/zip_archive.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "baq/error.hpp"

namespace baq {

namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfDirectory = 0x06054b50;
constexpr uint32_t kZip64EndOfDirectory = 0x06064b50;
constexpr uint32_t kZip64Locator = 0x07064b50;

// Little-endian field reads with the archive's bounds checked first.
class Bytes {
 public:
  Bytes(const uint8_t* data, uint64_t size, const std::string& path) : data_(data), size_(size), path_(path) {}
  void need(uint64_t at, uint64_t n, const char* what) const {
    if (at > size_ || n > size_ - at) fail("{}: truncated zip archive: {} at byte {} runs past the end", path_, what, at);
  }
  template <class T>
  T get(uint64_t at, const char* what) const {
    need(at, sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + at, sizeof(T));
    return v;
  }
  const uint8_t* at(uint64_t pos) const { return data_ + pos; }

 private:
  const uint8_t* data_;
  uint64_t size_;
  const std::string& path_;
};

}  // namespace

ZipArchive::ZipArchive(const uint8_t* data, uint64_t size, std::string path) : data_(data), size_(size), path_(std::move(path)) {
  const Bytes b(data_, size_, path_);
  if (size_ < 22) fail("{}: not a zip archive ({} bytes, no end-of-directory record)", path_, size_);
  // The end record sits in the last 22 + 65535 (comment) bytes; search backwards for its signature.
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size_ > 22 + 65535 ? size_ - 22 - 65535 : 0;
  for (uint64_t p = size_ - 22 + 1; p-- > lowest;)
    if (b.get<uint32_t>(p, "end record") == kEndOfDirectory) {
      eocd = p;
      break;
    }
  if (eocd == UINT64_MAX) fail("{}: not a zip archive (no end-of-directory record)", path_);
  if (b.get<uint16_t>(eocd + 4, "disk number") != 0 || b.get<uint16_t>(eocd + 6, "disk number") != 0)
    fail("{}: multi-disk zip archives are not supported", path_);
  uint64_t count = b.get<uint16_t>(eocd + 10, "entry count");
  uint64_t dir_size = b.get<uint32_t>(eocd + 12, "directory size");
  uint64_t dir_offset = b.get<uint32_t>(eocd + 16, "directory offset");
  if (count == 0xFFFF || dir_size == 0xFFFFFFFF || dir_offset == 0xFFFFFFFF) {
    // zip64 (torch writes it past 4 GiB): the locator just before the end record points at the real one.
    if (eocd < 20 || b.get<uint32_t>(eocd - 20, "zip64 locator") != kZip64Locator)
      fail("{}: zip64 fields without a zip64 locator", path_);
    const uint64_t z = b.get<uint64_t>(eocd - 20 + 8, "zip64 end offset");
    if (b.get<uint32_t>(z, "zip64 end record") != kZip64EndOfDirectory)
      fail("{}: zip64 end record missing at byte {}", path_, z);
    count = b.get<uint64_t>(z + 32, "zip64 entry count");
    dir_size = b.get<uint64_t>(z + 40, "zip64 directory size");
    dir_offset = b.get<uint64_t>(z + 48, "zip64 directory offset");
  }
  b.need(dir_offset, dir_size, "the central directory");
  if (count > dir_size / 46) fail("{}: {} entries cannot fit a {}-byte central directory", path_, count, dir_size);

  uint64_t p = dir_offset;
  const uint64_t dir_end = dir_offset + dir_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (p + 46 > dir_end || b.get<uint32_t>(p, "directory entry") != kCentralHeader)
      fail("{}: central directory entry {} is malformed", path_, i);
    ZipEntry e;
    const uint16_t flags = b.get<uint16_t>(p + 8, "flags");
    e.method = b.get<uint16_t>(p + 10, "method");
    e.crc32 = b.get<uint32_t>(p + 16, "crc");
    e.compressed_size = b.get<uint32_t>(p + 20, "compressed size");
    e.size = b.get<uint32_t>(p + 24, "size");
    const uint16_t name_len = b.get<uint16_t>(p + 28, "name length");
    const uint16_t extra_len = b.get<uint16_t>(p + 30, "extra length");
    const uint16_t comment_len = b.get<uint16_t>(p + 32, "comment length");
    uint64_t local = b.get<uint32_t>(p + 42, "local header offset");
    const uint64_t next = p + 46 + name_len + extra_len + comment_len;
    if (next > dir_end) fail("{}: central directory entry {} runs past the directory", path_, i);
    e.name.assign(reinterpret_cast<const char*>(b.at(p + 46)), name_len);
    if (flags & 1) fail("{}: entry '{}' is encrypted", path_, e.name);
    // The zip64 extra field holds, in this order, whichever of the 32-bit fields overflowed.
    for (uint64_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
      const uint16_t id = b.get<uint16_t>(x, "extra id");
      const uint16_t len = b.get<uint16_t>(x + 2, "extra length");
      if (x + 4 + len > p + 46 + name_len + extra_len) fail("{}: entry '{}' has a malformed extra field", path_, e.name);
      if (id == 1) {
        uint64_t f = x + 4;
        const uint64_t end = f + len;
        auto take = [&](uint64_t& field) {
          if (f + 8 > end) fail("{}: entry '{}' has a short zip64 extra field", path_, e.name);
          field = b.get<uint64_t>(f, "zip64 field");
          f += 8;
        };
        if (e.size == 0xFFFFFFFF) take(e.size);
        if (e.compressed_size == 0xFFFFFFFF) take(e.compressed_size);
        if (local == 0xFFFFFFFF) take(local);
      }
      x += 4 + len;
    }
    if (b.get<uint32_t>(local, "local header") != kLocalHeader)
      fail("{}: entry '{}' has no local header at byte {}", path_, e.name, local);
    e.data_offset = local + 30 + b.get<uint16_t>(local + 26, "local name length") + b.get<uint16_t>(local + 28, "local extra length");
    if (e.data_offset > size_ || e.compressed_size > size_ - e.data_offset)
      fail("{}: truncated zip archive: the data of entry '{}' runs past the end", path_, e.name);
    if (e.method != 0 && e.method != 8) fail("{}: entry '{}' uses compression method {} (stored and deflate are read)", path_, e.name, e.method);
    if (e.method == 0 && e.compressed_size != e.size)
      fail("{}: stored entry '{}' has compressed size {} but size {}", path_, e.name, e.compressed_size, e.size);
    if (!index_.emplace(e.name, entries_.size()).second) fail("{}: entry '{}' appears twice", path_, e.name);
    entries_.push_back(std::move(e));
    p = next;
  }
}

void ZipArchive::verify_stored_entries() const {
  for (const ZipEntry& e : entries_) {
    if (e.method != 0) continue;  // deflated entries are checked as they are inflated
    // 64 MiB chunks on every core, joined with crc32_combine: a multi-gigabyte checkpoint checks at
    // memory speed rather than one core's.
    constexpr uint64_t kChunk = uint64_t{64} << 20;
    const int64_t chunks = static_cast<int64_t>((e.size + kChunk - 1) / kChunk);
    std::vector<uLong> crcs(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const uint64_t begin = static_cast<uint64_t>(c) * kChunk, n = std::min(kChunk, e.size - begin);
      crcs[static_cast<size_t>(c)] = crc32_z(0, data_ + e.data_offset + begin, n);
    }
    uLong crc = crc32_z(0, nullptr, 0);
    for (int64_t c = 0; c < chunks; ++c) {
      const uint64_t begin = static_cast<uint64_t>(c) * kChunk, n = std::min(kChunk, e.size - begin);
      crc = crc32_combine64(crc, crcs[static_cast<size_t>(c)], static_cast<z_off64_t>(n));
    }
    if (crc != e.crc32) fail("{}: entry '{}' fails its CRC-32 check (corrupt archive)", path_, e.name);
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

std::string ZipArchive::read(const ZipEntry& e, uint64_t limit) const {
  if (e.size > limit) fail("{}: entry '{}' claims {} bytes, more than the {} accepted", path_, e.name, e.size, limit);
  std::string out;
  if (e.method == 0) {
    out.assign(reinterpret_cast<const char*>(data_ + e.data_offset), e.size);
  } else {
    out.resize(e.size);
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail("{}: cannot start inflating '{}'", path_, e.name);
    uint64_t in_done = 0, out_done = 0;
    int rc = Z_OK;
    // zlib counts in 32-bit chunks; feed it piecewise so entries past 4 GiB still inflate.
    while (rc == Z_OK) {
      const uint64_t in_left = e.compressed_size - in_done, out_left = e.size - out_done;
      z.next_in = const_cast<Bytef*>(data_ + e.data_offset + in_done);
      z.avail_in = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      z.next_out = reinterpret_cast<Bytef*>(out.data() + out_done);
      z.avail_out = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
      const uInt in_before = z.avail_in, out_before = z.avail_out;
      rc = inflate(&z, Z_NO_FLUSH);
      in_done += in_before - z.avail_in;
      out_done += out_before - z.avail_out;
      if (rc == Z_OK && in_before == z.avail_in && out_before == z.avail_out) rc = Z_BUF_ERROR;  // no progress
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END || out_done != e.size)
      fail("{}: entry '{}' does not inflate to its {} bytes", path_, e.name, e.size);
  }
  const uLong crc = crc32_z(0, reinterpret_cast<const Bytef*>(out.data()), out.size());
  if (crc != e.crc32) fail("{}: entry '{}' fails its CRC-32 check (corrupt archive)", path_, e.name);
  return out;
}

}  // namespace baq
