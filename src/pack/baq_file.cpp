#include "baq/baq_file.hpp"

#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "baq/error.hpp"
#include "baq/half.hpp"

namespace baq {

namespace {

constexpr char kMagic[8] = {'B', 'A', 'Q', 'F', 'I', 'L', 'E', '\0'};
constexpr uint64_t kHeaderFixed = 24, kAlign = 64;

uint32_t crc32_of(const void* data, uint64_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {  // zlib takes 32-bit lengths
    const auto chunk = static_cast<uInt>(std::min<uint64_t>(n, 1u << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Byte sizes of a packed record's sections, in order, from its own fields.
struct PackedSections {
  uint64_t levels, lo, hi, means, group_of, codes;
  std::vector<uint64_t> offsets() const {
    std::vector<uint64_t> off;
    uint64_t at = 0;
    for (uint64_t s : {levels, lo, hi, means, group_of, codes}) {
      off.push_back(at);
      at = align_up(at + s, 8);
    }
    off.push_back(at);
    return off;
  }
};

PackedSections sections_of(int64_t rows, int64_t cols, int64_t groups, bool uniform, int64_t n_means, bool has_group_of,
                            int64_t words_per_row) {
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  return {uniform ? 0 : u(cols), 2 * u(rows) * u(groups), 2 * u(rows) * u(groups), 2 * u(n_means),
          has_group_of ? 4 * u(cols) : 0, 8 * u(rows) * u(words_per_row)};
}

std::string packed_record(const PackedLinear& p, nlohmann::ordered_json& fields) {
  const RowRadixLayout& layout = p.layout;
  const PackedSections s = sections_of(p.rows, p.cols, p.n_groups, p.uniform, static_cast<int64_t>(p.means.size()),
                                       !p.group_of.empty(), layout.words_per_row());
  const auto off = s.offsets();
  std::string bytes(off.back(), '\0');
  auto put = [&](int section, const void* data, uint64_t n) { std::memcpy(bytes.data() + off[section], data, n); };
  if (!p.uniform) {
    std::vector<uint8_t> lm1(p.levels.size());
    for (size_t j = 0; j < lm1.size(); ++j) lm1[j] = static_cast<uint8_t>(p.levels[j] - 1);
    put(0, lm1.data(), s.levels);
  }
  put(1, p.lo.data(), s.lo);
  put(2, p.hi.data(), s.hi);
  put(3, p.means.data(), s.means);
  put(4, p.group_of.data(), s.group_of);
  put(5, p.codes.data(), s.codes);
  fields = {{"rows", p.rows},       {"cols", p.cols},
            {"groups", p.n_groups}, {"group_size", p.group_size},
            {"sym", p.sym},         {"uniform_levels", p.uniform ? p.levels.front() : 0},
            {"means", p.means.size()}, {"group_of", !p.group_of.empty()},
            {"words_per_row", layout.words_per_row()}};
  return bytes;
}

}  // namespace

bool is_baq_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8];
  return static_cast<bool>(in.read(magic, 8)) && std::memcmp(magic, kMagic, 8) == 0;
}

void write_baq_file(const std::string& path, const BaqFileContents& c) {
  // Records first (their offsets depend on the header's length, so lay out the header twice).
  struct Pending {
    std::string name, kind, bytes;
    nlohmann::ordered_json fields;
  };
  std::vector<Pending> pending;
  for (const auto& [name, t] : c.tensors) {
    if (t->data == nullptr) fail("{}: tensor '{}' has no F32 data (already packed)", path, name);
    for (float v : t->span())
      if (!std::isfinite(v)) fail("{}: refusing to write tensor '{}' with a non-finite value", path, name);
    // Tensors whose every value is a BF16 number (a BF16 checkpoint's) are stored in half the bytes,
    // losslessly.
    bool bf16 = true;
    for (float v : t->span()) {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      bf16 = bf16 && (bits & 0xffff) == 0;
    }
    Pending p{name, bf16 ? "bf16" : "f32", {}, {}};
    if (bf16) {
      p.bytes.resize(static_cast<size_t>(t->numel()) * 2);
      for (int64_t i = 0; i < t->numel(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, t->data + i, 4);
        const auto h = static_cast<uint16_t>(bits >> 16);
        std::memcpy(p.bytes.data() + 2 * i, &h, 2);
      }
    } else {
      p.bytes.assign(reinterpret_cast<const char*>(t->data), static_cast<size_t>(t->numel()) * 4);
    }
    p.fields["shape"] = t->shape;
    pending.push_back(std::move(p));
  }
  for (const auto& [name, q] : c.quantized) {
    Pending p{name, "packed", {}, {}};
    p.bytes = packed_record(*q, p.fields);
    pending.push_back(std::move(p));
  }
  for (const auto& [name, bytes] : c.files) pending.push_back({name, "file", bytes, {}});

  auto header_for = [&](uint64_t first_offset) {
    nlohmann::ordered_json j;
    j["metadata"] = c.metadata;
    auto& recs = j["records"] = nlohmann::ordered_json::array();
    uint64_t at = first_offset;
    for (const auto& p : pending) {
      nlohmann::ordered_json r = {{"name", p.name}, {"kind", p.kind}, {"offset", at}, {"bytes", p.bytes.size()},
                                  {"crc32", crc32_of(p.bytes.data(), p.bytes.size())}};
      for (const auto& [k, v] : p.fields.items()) r[k] = v;
      recs.push_back(std::move(r));
      at = align_up(at + p.bytes.size(), kAlign);
    }
    return j.dump();
  };
  // The header's length moves the first offset, which can change the header's length: iterate.
  uint64_t first = align_up(kHeaderFixed + header_for(0).size(), kAlign);
  std::string header = header_for(first);
  while (align_up(kHeaderFixed + header.size(), kAlign) != first) {
    first = align_up(kHeaderFixed + header.size(), kAlign);
    header = header_for(first);
  }

  write_file_atomically(path, [&](std::ostream& out) {
    const uint32_t version = kBaqFileVersion, crc = crc32_of(header.data(), header.size());
    const uint64_t len = header.size();
    out.write(kMagic, 8);
    out.write(reinterpret_cast<const char*>(&version), 4);
    out.write(reinterpret_cast<const char*>(&crc), 4);
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    uint64_t at = kHeaderFixed + header.size();
    for (const auto& p : pending) {
      const uint64_t start = align_up(at, kAlign);
      const std::string pad(start - at, '\0');
      out.write(pad.data(), static_cast<std::streamsize>(pad.size()));
      out.write(p.bytes.data(), static_cast<std::streamsize>(p.bytes.size()));
      at = start + p.bytes.size();
    }
  });
}

BaqFileReader::BaqFileReader(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  const uint64_t size = file_->size();
  const uint8_t* d = file_->data();
  if (size < kHeaderFixed) fail("{}: truncated .baq file ({} bytes)", path, size);
  if (std::memcmp(d, kMagic, 8) != 0) fail("{}: not a .baq file (bad magic)", path);
  uint32_t version, crc;
  uint64_t len;
  std::memcpy(&version, d + 8, 4);
  std::memcpy(&crc, d + 12, 4);
  std::memcpy(&len, d + 16, 8);
  if (version != kBaqFileVersion) fail("{}: .baq version {} is not supported (this baq reads version {})", path, version, kBaqFileVersion);
  if (len > size - kHeaderFixed) fail("{}: header length {} exceeds the file ({} bytes; truncated?)", path, len, size);
  if (crc32_of(d + kHeaderFixed, len) != crc) fail("{}: header checksum mismatch (corrupt file)", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(d + kHeaderFixed, d + kHeaderFixed + len);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON ({})", path, e.what());
  }
  if (!j.is_object() || !j.contains("records") || !j["records"].is_array()) fail("{}: header has no records", path);
  metadata_ = j.value("metadata", nlohmann::json::object());
  const uint64_t data_start = kHeaderFixed + len;
  for (const auto& r : j["records"]) {
    Record rec;
    try {
      rec.name = r.at("name").get<std::string>();
      rec.kind = r.at("kind").get<std::string>();
      rec.offset = r.at("offset").get<uint64_t>();
      rec.bytes = r.at("bytes").get<uint64_t>();
      rec.crc = r.at("crc32").get<uint32_t>();
    } catch (const nlohmann::json::exception&) {
      fail("{}: malformed record entry {}", path, r.dump().substr(0, 120));
    }
    if (rec.offset < data_start || rec.offset % kAlign != 0)
      fail("{}: record '{}' at offset {} is misaligned or inside the header", path, rec.name, rec.offset);
    if (rec.offset > size || rec.bytes > size - rec.offset)
      fail("{}: record '{}' [{}, +{}) lies outside the file ({} bytes; truncated?)", path, rec.name, rec.offset, rec.bytes, size);
    rec.fields = r;
    TensorInfo info;
    info.name = rec.name;
    info.file = path;
    if (rec.kind == "f32" || rec.kind == "bf16") {
      if (!r.contains("shape") || !r["shape"].is_array()) fail("{}: record '{}' has no shape", path, rec.name);
      uint64_t n = 1;
      for (const auto& dim : r["shape"]) {
        if (!dim.is_number_unsigned()) fail("{}: record '{}' has a bad shape", path, rec.name);
        n *= dim.get<uint64_t>();
        info.shape.push_back(dim.get<int64_t>());
      }
      const uint64_t width = rec.kind == "f32" ? 4 : 2;
      if (n * width != rec.bytes)
        fail("{}: record '{}' holds {} bytes but its shape needs {}", path, rec.name, rec.bytes, n * width);
      info.dtype = rec.kind == "f32" ? DType::F32 : DType::BF16;
      infos_.push_back(info);
    } else if (rec.kind == "packed") {
      int64_t rows, cols, groups, means, words;
      bool uniform, group_of;
      try {
        rows = r.at("rows").get<int64_t>();
        cols = r.at("cols").get<int64_t>();
        groups = r.at("groups").get<int64_t>();
        means = r.at("means").get<int64_t>();
        words = r.at("words_per_row").get<int64_t>();
        uniform = r.at("uniform_levels").get<int>() != 0;
        group_of = r.at("group_of").get<bool>();
        (void)r.at("sym").get<bool>();
        (void)r.at("group_size").get<int64_t>();
      } catch (const nlohmann::json::exception&) {
        fail("{}: packed record '{}' lacks its fields", path, rec.name);
      }
      if (rows <= 0 || cols <= 0 || groups <= 0 || groups > cols || means < 0 || means > cols || words < 0 ||
          words > cols || rows > (int64_t{1} << 32) || cols > (int64_t{1} << 32))
        fail("{}: packed record '{}' has impossible sizes", path, rec.name);
      const auto off = sections_of(rows, cols, groups, uniform, means, group_of, words).offsets();
      if (off.back() != rec.bytes)
        fail("{}: packed record '{}' holds {} bytes but its fields need {}", path, rec.name, rec.bytes, off.back());
      info.shape = {rows, cols};
      info.dtype = DType::Packed;
      infos_.push_back(info);
    } else if (rec.kind != "file") {
      fail("{}: record '{}' has unknown kind '{}'", path, rec.name, rec.kind);
    }
    records_.push_back(std::move(rec));
  }
}

bool BaqFileReader::contains(const std::string& name) const {
  for (const auto& r : records_)
    if (r.name == name && r.kind != "file") return true;
  return false;
}

const BaqFileReader::Record& BaqFileReader::record(const std::string& name, const char* kind) const {
  for (const auto& r : records_)
    if (r.name == name && (kind == nullptr || r.kind == kind || (std::string(kind) == "tensor" && r.kind != "file")))
      return r;
  fail("{}: missing {} '{}'", file_->path(), kind == nullptr ? "record" : kind, name);
}

const uint8_t* BaqFileReader::verified(const Record& r) const {
  const uint8_t* p = file_->data() + r.offset;
  if (crc32_of(p, r.bytes) != r.crc) fail("{}: record '{}' checksum mismatch (corrupt file)", file_->path(), r.name);
  return p;
}

PackedLinear BaqFileReader::packed(const std::string& name) const {
  const Record& r = record(name, "packed");
  const uint8_t* d = verified(r);
  const auto& f = r.fields;
  PackedLinear p;
  p.rows = f["rows"].get<int64_t>();
  p.cols = f["cols"].get<int64_t>();
  p.n_groups = f["groups"].get<int>();
  p.group_size = f["group_size"].get<int64_t>();
  p.sym = f["sym"].get<bool>();
  const int uniform = f["uniform_levels"].get<int>();
  p.uniform = uniform != 0;
  const int64_t means = f["means"].get<int64_t>(), words = f["words_per_row"].get<int64_t>();
  const auto off = sections_of(p.rows, p.cols, p.n_groups, p.uniform, means, f["group_of"].get<bool>(), words).offsets();
  p.levels.resize(static_cast<size_t>(p.cols));
  for (int64_t j = 0; j < p.cols; ++j) p.levels[static_cast<size_t>(j)] = p.uniform ? uniform : d[off[0] + j] + 1;
  auto read16 = [&](int section, std::vector<uint16_t>& v, int64_t n) {
    v.resize(static_cast<size_t>(n));
    std::memcpy(v.data(), d + off[section], static_cast<size_t>(n) * 2);
  };
  read16(1, p.lo, p.rows * p.n_groups);
  read16(2, p.hi, p.rows * p.n_groups);
  read16(3, p.means, means);
  if (f["group_of"].get<bool>()) {
    p.group_of.resize(static_cast<size_t>(p.cols));
    std::memcpy(p.group_of.data(), d + off[4], static_cast<size_t>(p.cols) * 4);
    for (uint32_t g : p.group_of)
      if (g >= static_cast<uint32_t>(p.n_groups)) fail("{}: record '{}' names group {} of {}", file_->path(), name, g, p.n_groups);
  } else if (p.group_size <= 0 || (p.cols + p.group_size - 1) / p.group_size != p.n_groups) {
    fail("{}: record '{}' has group size {} inconsistent with {} groups", file_->path(), name, p.group_size, p.n_groups);
  }
  int64_t ones = 0;
  for (int L : p.levels) ones += L == 1;
  if (ones != means) fail("{}: record '{}' stores {} column values for {} one-level columns", file_->path(), name, means, ones);
  p.prepare();  // builds the row layout, which validates the level counts
  if (p.layout.words_per_row() != words)
    fail("{}: record '{}' claims {} words per row, its levels need {}", file_->path(), name, words, p.layout.words_per_row());
  for (auto* v : {&p.lo, &p.hi, &p.means})
    for (uint16_t h : *v)
      if (!std::isfinite(f16_to_f32(h))) fail("{}: record '{}' holds a non-finite grid value", file_->path(), name);
  p.codes.resize(static_cast<size_t>(p.rows * words));
  std::memcpy(p.codes.data(), d + off[5], p.codes.size() * 8);
  return p;
}

std::shared_ptr<const PackedLinear> BaqFileReader::load_packed(const std::string& name) const {
  for (const auto& r : records_)
    if (r.name == name && r.kind == "packed") return std::make_shared<const PackedLinear>(packed(name));
  return nullptr;
}

Tensor BaqFileReader::load(const std::string& name) const {
  const Record& r = record(name, "tensor");
  if (r.kind == "packed") return dequantize(packed(name));
  const uint8_t* d = verified(r);
  std::vector<int64_t> shape;
  for (const auto& dim : r.fields["shape"]) shape.push_back(dim.get<int64_t>());
  Tensor t = Tensor::zeros(shape);
  if (r.kind == "bf16") {
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint16_t h;
      std::memcpy(&h, d + 2 * i, 2);
      t.data[i] = bf16_to_f32(h);
    }
  } else {
    std::memcpy(t.data, d, r.bytes);
  }
  for (float v : t.span())
    if (!std::isfinite(v)) fail("{}: tensor '{}' holds a non-finite value", file_->path(), name);
  return t;
}

std::string BaqFileReader::file(const std::string& name) const {
  const Record& r = record(name, "file");
  const uint8_t* d = verified(r);
  return {reinterpret_cast<const char*>(d), r.bytes};
}

std::string BaqFileReader::describe() const {
  return fmt::format(".baq v{} {} ({} records)", kBaqFileVersion,
                     std::filesystem::path(file_->path()).filename().string(), records_.size());
}

}  // namespace baq
