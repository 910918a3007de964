#include "baq/baq_file.hpp"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/json.hpp"

namespace baq {

namespace {

constexpr char kMagic[8] = {'B', 'A', 'Q', 'F', 'I', 'L', 'E', '\0'};
constexpr uint64_t kPrologue = 64, kAlign = 64;

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

// A packed record's sections, in order, each 8-aligned: [levels − 1, u8 per column, when they differ]
// [lo F16] [hi F16] (per (row, group); Scaled8: per (row, superblock)) [qlo u8] [qhi u8] (Scaled8, per
// (row, group)) [one-level column values F16] [group u32 per column, act-order] [codes: rows × row_bits bits, to whole bytes].
struct PackedSections {
  uint64_t levels, lo, hi, qlo, qhi, means, group_of, codes;
  std::vector<uint64_t> offsets() const {
    std::vector<uint64_t> off;
    uint64_t at = 0;
    for (uint64_t s : {levels, lo, hi, qlo, qhi, means, group_of, codes}) {
      off.push_back(at);
      at = align_up(at + s, 8);
    }
    off.push_back(at);
    return off;
  }
};

// The sizes a record's own fields imply. Every count is bounded by the caller first (no overflow).
PackedSections sections_of(const PackedLinear& p) {
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  const bool scaled = p.format->ranges == RangeKind::Scaled8;
  const uint64_t range_count = u(p.rows) * u(scaled ? p.n_super() : p.n_groups);
  const uint64_t group_count = scaled ? u(p.rows) * u(p.n_groups) : 0;
  return {p.uniform ? 0 : u(p.cols), 2 * range_count, 2 * range_count, group_count, group_count, 2 * p.means.size(),
          p.group_of.empty() ? 0 : 4 * u(p.cols), u(p.code_bytes())};
}

// A packed record's fields (bounded, consistent) as a PackedLinear without its arrays.
PackedLinear packed_fields(const nlohmann::json& r, const std::string& what) {
  constexpr int64_t kMaxDim = int64_t{1} << 32;
  PackedLinear p;
  p.format = &quant_format_named(json_string(r, "format", what));
  p.rows = json_int(r, "rows", what, 1, kMaxDim);
  p.cols = json_int(r, "cols", what, 1, kMaxDim);
  p.n_groups = static_cast<int>(json_int(r, "groups", what, 1, std::min<int64_t>(p.cols, 1 << 30)));
  p.group_size = json_int(r, "group_size", what, 0, p.cols);
  p.super_groups = static_cast<int>(json_int(r, "super_groups", what, 1, p.n_groups));
  p.sym = json_bool(r, "sym", what);
  const int uniform = static_cast<int>(json_int(r, "uniform_levels", what, 0, 256));
  p.uniform = uniform != 0;
  if (p.uniform) p.levels.assign(static_cast<size_t>(p.cols), uniform);
  p.means.resize(static_cast<size_t>(json_int(r, "means", what, 0, p.cols)));
  if (json_bool(r, "group_of", what)) p.group_of.resize(static_cast<size_t>(p.cols));
  p.row_bits = json_int(r, "row_bits", what, 0, 64 * p.cols + 512);
  if (p.format->ranges == RangeKind::F16 && p.super_groups != 1) fail("{}: super_groups {} with F16 ranges", what, p.super_groups);
  if (p.rows > (int64_t{1} << 40) / std::max<int64_t>(p.cols, 1)) fail("{}: {} × {} is too large", what, p.rows, p.cols);
  return p;
}

}  // namespace

std::string packed_record(const PackedLinear& p, nlohmann::ordered_json& fields) {
  const PackedSections s = sections_of(p);
  const auto off = s.offsets();
  std::string bytes(off.back(), '\0');
  auto put = [&](int section, const void* data, uint64_t n) {
    if (n > 0) std::memcpy(bytes.data() + off[section], data, n);
  };
  if (!p.uniform) {
    std::vector<uint8_t> lm1(p.levels.size());
    for (size_t j = 0; j < lm1.size(); ++j) lm1[j] = static_cast<uint8_t>(p.levels[j] - 1);
    put(0, lm1.data(), s.levels);
  }
  put(1, p.lo.data(), s.lo);
  put(2, p.hi.data(), s.hi);
  put(3, p.qlo.data(), s.qlo);
  put(4, p.qhi.data(), s.qhi);
  put(5, p.means.data(), s.means);
  put(6, p.group_of.data(), s.group_of);
  put(7, p.codes(), s.codes);
  fields = {{"format", p.format->name},    {"rows", p.rows},
            {"cols", p.cols},              {"groups", p.n_groups},
            {"group_size", p.group_size},  {"super_groups", p.super_groups},
            {"sym", p.sym},                {"uniform_levels", p.uniform ? p.levels.front() : 0},
            {"means", p.means.size()},     {"group_of", !p.group_of.empty()},
            {"row_bits", p.row_bits}};
  return bytes;
}

PackedLinear packed_from_record(const nlohmann::json& fields, const uint8_t* d, uint64_t bytes, const std::string& what) {
  PackedLinear p = packed_fields(fields, what);
  const PackedSections s = sections_of(p);
  const auto off = s.offsets();
  if (off.back() != bytes) fail("{} holds {} bytes but its fields need {}", what, bytes, off.back());
  if (!p.uniform) {
    p.levels.resize(static_cast<size_t>(p.cols));
    for (int64_t j = 0; j < p.cols; ++j) p.levels[static_cast<size_t>(j)] = d[off[0] + j] + 1;
  }
  auto read = [&](int section, auto& v, uint64_t n) {
    v.resize(n / sizeof(v[0]));
    if (n > 0) std::memcpy(v.data(), d + off[section], n);
  };
  read(1, p.lo, s.lo);
  read(2, p.hi, s.hi);
  read(3, p.qlo, s.qlo);
  read(4, p.qhi, s.qhi);
  read(5, p.means, s.means);
  read(6, p.group_of, s.group_of);
  if (!p.group_of.empty()) {
    for (uint32_t g : p.group_of)
      if (g >= static_cast<uint32_t>(p.n_groups)) fail("{} names group {} of {}", what, g, p.n_groups);
  } else if (p.group_size <= 0 || (p.cols + p.group_size - 1) / p.group_size != p.n_groups) {
    fail("{} has group size {} inconsistent with {} groups", what, p.group_size, p.n_groups);
  }
  int64_t ones = 0;
  for (int L : p.levels) ones += L == 1;
  if (ones != static_cast<int64_t>(p.means.size())) fail("{} stores {} column values for {} one-level columns", what, p.means.size(), ones);
  if (!p.format->accepts(p.levels, p.group_of.empty())) fail("{}: format {} cannot hold these level counts", what, p.format->name);
  const int64_t claimed = p.row_bits;
  p.prepare();  // derives the layout from the levels (validating them) and the bits per row it needs
  if (p.row_bits != claimed) fail("{} claims {} code bits per row, its levels need {}", what, claimed, p.row_bits);
  for (auto* v : {&p.lo, &p.hi, &p.means})
    for (uint16_t h : *v)
      if (!std::isfinite(f16_to_f32(h))) fail("{} holds a non-finite grid value", what);
  p.allocate_codes();
  if (s.codes > 0) std::memcpy(p.codes(), d + off[7], s.codes);
  // Every bit pattern decodes to codes below their level counts (planes: b-bit fields; radix: a
  // field is a fraction below 1), so the codes need no check.
  p.prepare_fused();
  return p;
}

bool is_baq_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8];
  return static_cast<bool>(in.read(magic, 8)) && std::memcmp(magic, kMagic, 8) == 0;
}

BaqFileWriter::BaqFileWriter(const std::string& path) : file_(path) {
  const std::string prologue(kPrologue, '\0');  // filled by finish()
  file_.stream().write(prologue.data(), static_cast<std::streamsize>(prologue.size()));
  at_ = kPrologue;
}

void BaqFileWriter::add_record(const std::string& name, const std::string& kind, const std::string& bytes,
                               nlohmann::ordered_json fields) {
  if (std::find(names_.begin(), names_.end(), name) != names_.end()) fail("{}: two records named '{}'", file_.path(), name);
  names_.push_back(name);
  const uint64_t start = align_up(at_, kAlign);
  const std::string pad(start - at_, '\0');
  file_.stream().write(pad.data(), static_cast<std::streamsize>(pad.size()));
  file_.stream().write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!file_.stream()) fail("{}: write failed (disk full?)", file_.path());
  nlohmann::ordered_json r = {{"name", name}, {"kind", kind}, {"offset", start}, {"bytes", bytes.size()},
                              {"crc32", crc32_of(bytes.data(), bytes.size())}};
  for (const auto& [k, v] : fields.items()) r[k] = v;
  records_.push_back(std::move(r));
  at_ = start + bytes.size();
}

void BaqFileWriter::add_tensor(const std::string& name, const Tensor& t) {
  if (t.empty()) fail("{}: tensor '{}' has no data (packed, or never loaded)", file_.path(), name);
  if (t.first_non_finite() >= 0) fail("{}: refusing to write tensor '{}' with a non-finite value", file_.path(), name);
  if (t.dtype == DType::BF16) {  // as stored, without a detour through F32
    add_record(name, "bf16", std::string(static_cast<const char*>(t.raw), t.bytes()), {{"shape", t.shape}});
    return;
  }
  const Tensor f = t.to_f32();
  // Tensors whose every value is a BF16 number (a BF16 checkpoint's) are stored in half the bytes, losslessly.
  bool bf16 = true;
  for (float v : f.span()) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bf16 = bf16 && (bits & 0xffff) == 0;
  }
  std::string bytes;
  if (bf16) {
    bytes.resize(static_cast<size_t>(f.numel()) * 2);
    for (int64_t i = 0; i < f.numel(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, f.data + i, 4);
      const auto h = static_cast<uint16_t>(bits >> 16);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  } else {
    bytes.assign(reinterpret_cast<const char*>(f.data), static_cast<size_t>(f.numel()) * 4);
  }
  add_record(name, bf16 ? "bf16" : "f32", bytes, {{"shape", t.shape}});
}

void BaqFileWriter::add_packed(const std::string& name, const PackedLinear& p) {
  nlohmann::ordered_json fields;
  const std::string bytes = packed_record(p, fields);
  add_record(name, "packed", bytes, std::move(fields));
}

void BaqFileWriter::add_file(const std::string& name, const std::string& bytes) { add_record(name, "file", bytes, {}); }

void BaqFileWriter::finish(const nlohmann::json& metadata) {
  nlohmann::ordered_json j;
  j["metadata"] = metadata;
  j["records"] = records_;
  const std::string header = j.dump();
  const uint64_t header_offset = align_up(at_, kAlign);
  const std::string pad(header_offset - at_, '\0');
  std::ostream& out = file_.stream();
  out.write(pad.data(), static_cast<std::streamsize>(pad.size()));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  // The prologue last: it points at the header, and its own CRC covers it.
  std::string prologue(kPrologue, '\0');
  const uint32_t version = kBaqFileVersion, header_crc = crc32_of(header.data(), header.size());
  const uint64_t header_len = header.size();
  std::memcpy(prologue.data(), kMagic, 8);
  std::memcpy(prologue.data() + 8, &version, 4);
  std::memcpy(prologue.data() + 12, &header_crc, 4);
  std::memcpy(prologue.data() + 16, &header_offset, 8);
  std::memcpy(prologue.data() + 24, &header_len, 8);
  const uint32_t prologue_crc = crc32_of(prologue.data(), 32);
  std::memcpy(prologue.data() + 32, &prologue_crc, 4);
  out.seekp(0);
  out.write(prologue.data(), static_cast<std::streamsize>(prologue.size()));
  at_ = header_offset + header_len;
  file_.commit();
}

BaqFileReader::BaqFileReader(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  const uint64_t size = file_->size();
  const uint8_t* d = file_->data();
  if (size < kPrologue) fail("{}: truncated .baq file ({} bytes)", path, size);
  if (std::memcmp(d, kMagic, 8) != 0) fail("{}: not a .baq file (bad magic)", path);
  uint32_t version, header_crc, prologue_crc;
  uint64_t header_offset, len;
  std::memcpy(&version, d + 8, 4);
  std::memcpy(&header_crc, d + 12, 4);
  std::memcpy(&header_offset, d + 16, 8);
  std::memcpy(&len, d + 24, 8);
  std::memcpy(&prologue_crc, d + 32, 4);
  if (version != kBaqFileVersion)
    fail("{}: .baq version {} is not supported (this baq reads version {}; quantize the model again)", path, version,
         kBaqFileVersion);
  if (crc32_of(d, 32) != prologue_crc) fail("{}: prologue checksum mismatch (corrupt file)", path);
  for (uint64_t i = 36; i < kPrologue; ++i)
    if (d[i] != 0) fail("{}: prologue byte {} is not zero (corrupt file)", path, i);
  if (header_offset < kPrologue || header_offset % kAlign != 0 || header_offset > size || len > size - header_offset)
    fail("{}: header [{}, +{}) lies outside the file ({} bytes; truncated?)", path, header_offset, len, size);
  if (header_offset + len != size)
    fail("{}: {} bytes follow the header (the file ends at byte {}; appended data?)", path, size - header_offset - len,
         header_offset + len);
  if (crc32_of(d + header_offset, len) != header_crc) fail("{}: header checksum mismatch (corrupt file)", path);
  const nlohmann::json j =
      parse_json(std::string_view(reinterpret_cast<const char*>(d + header_offset), len), path + " (header)");
  const nlohmann::json& records = json_field(j, "records", path + " (header)");
  if (!records.is_array()) fail("{}: header field 'records' is not a list", path);
  if (j.contains("metadata")) {
    if (!j["metadata"].is_object()) fail("{}: header field 'metadata' is not an object", path);
    metadata_ = j["metadata"];
  } else {
    metadata_ = nlohmann::json::object();
  }
  constexpr int64_t kMaxDim = int64_t{1} << 32;
  for (const auto& r : records) {
    Record rec;
    rec.name = json_string(r, "name", path + ": a record");
    const std::string rwhat = fmt::format("{}: record '{}'", path, rec.name);
    rec.kind = json_string(r, "kind", rwhat);
    rec.offset = static_cast<uint64_t>(json_int(r, "offset", rwhat, 0, INT64_MAX));
    rec.bytes = static_cast<uint64_t>(json_int(r, "bytes", rwhat, 0, INT64_MAX));
    rec.crc = static_cast<uint32_t>(json_int(r, "crc32", rwhat, 0, UINT32_MAX));
    if (rec.offset < kPrologue || rec.offset % kAlign != 0)
      fail("{}: record '{}' at offset {} is misaligned or inside the prologue", path, rec.name, rec.offset);
    if (rec.offset > header_offset || rec.bytes > header_offset - rec.offset)
      fail("{}: record '{}' [{}, +{}) lies outside the file's records ({} bytes; truncated?)", path, rec.name,
           rec.offset, rec.bytes, header_offset);
    if (!index_.emplace(rec.name, records_.size()).second) fail("{}: two records named '{}'", path, rec.name);
    rec.fields = r;
    TensorInfo info;
    info.name = rec.name;
    info.file = path;
    if (rec.kind == "f32" || rec.kind == "bf16") {
      const nlohmann::json& shape = json_field(r, "shape", rwhat);
      if (!shape.is_array() || shape.empty() || shape.size() > 4)
        fail("{}: field 'shape' is not a list of 1 to 4 sizes", rwhat);
      uint64_t n = 1;
      for (const auto& dim : shape) {
        const int64_t v = json_as_int(dim, rwhat + ": a dimension", 1, kMaxDim);
        n *= static_cast<uint64_t>(v);
        if (n > (uint64_t{1} << 40)) fail("{}: shape is too large", rwhat);
        info.shape.push_back(v);
      }
      const uint64_t width = rec.kind == "f32" ? 4 : 2;
      if (n * width != rec.bytes)
        fail("{}: record '{}' holds {} bytes but its shape needs {}", path, rec.name, rec.bytes, n * width);
      info.dtype = rec.kind == "f32" ? DType::F32 : DType::BF16;
      infos_.push_back(info);
    } else if (rec.kind == "packed") {
      const PackedLinear p = packed_fields(r, rwhat);
      const uint64_t need = sections_of(p).offsets().back();
      if (need != rec.bytes)
        fail("{}: packed record '{}' holds {} bytes but its fields need {}", path, rec.name, rec.bytes, need);
      info.shape = {p.rows, p.cols};
      info.dtype = DType::Packed;
      infos_.push_back(info);
    } else if (rec.kind != "file") {
      fail("{}: record '{}' has unknown kind '{}'", path, rec.name, rec.kind);
    }
    records_.push_back(std::move(rec));
  }
  // Records in offset order tile the space between prologue and header, with zero bytes between.
  std::vector<const Record*> by_offset;
  for (const auto& r : records_) by_offset.push_back(&r);
  std::sort(by_offset.begin(), by_offset.end(), [](const Record* a, const Record* b) { return a->offset < b->offset; });
  uint64_t at = kPrologue;
  auto zeros = [&](uint64_t from, uint64_t to) {
    if (to - from >= kAlign) fail("{}: {} bytes at {} belong to no record", path, to - from, from);
    for (uint64_t i = from; i < to; ++i)
      if (d[i] != 0) fail("{}: padding byte {} is not zero (corrupt file)", path, i);
  };
  for (const Record* r : by_offset) {
    if (r->offset < at) fail("{}: record '{}' overlaps the record before it", path, r->name);
    zeros(at, r->offset);
    at = r->offset + r->bytes;
  }
  zeros(at, header_offset);
}

bool BaqFileReader::contains(const std::string& name) const {
  const auto it = index_.find(name);
  return it != index_.end() && records_[it->second].kind != "file";
}

const BaqFileReader::Record& BaqFileReader::record(const std::string& name, const char* kind) const {
  const auto it = index_.find(name);
  if (it != index_.end()) {
    const Record& r = records_[it->second];
    if (kind == nullptr || r.kind == kind || (std::string(kind) == "tensor" && r.kind != "file")) return r;
  }
  fail("{}: missing {} '{}'", file_->path(), kind == nullptr ? "record" : kind, name);
}

const uint8_t* BaqFileReader::verified(const Record& r) const {
  const uint8_t* p = file_->data() + r.offset;
  if (crc32_of(p, r.bytes) != r.crc) fail("{}: record '{}' checksum mismatch (corrupt file)", file_->path(), r.name);
  return p;
}

PackedLinear BaqFileReader::packed(const std::string& name) const {
  const Record& r = record(name, "packed");
  PackedLinear p = packed_from_record(r.fields, verified(r), r.bytes, fmt::format("{}: record '{}'", file_->path(), name));
  // Its bytes now live in `p`: the mapped copy would otherwise stay resident beside it (a model read
  // from a .baq held twice its file size).
  file_->release(r.offset, r.bytes);
  return p;
}

std::shared_ptr<const PackedLinear> BaqFileReader::load_packed(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end() || records_[it->second].kind != "packed") return nullptr;
  return std::make_shared<const PackedLinear>(packed(name));
}

Tensor BaqFileReader::load(const std::string& name) const {
  const Record& r = record(name, "tensor");
  if (r.kind == "packed") return dequantize(packed(name));
  // A view of the record in place (64-byte aligned), checked once against its CRC.
  const uint8_t* d = verified(r);
  std::vector<int64_t> shape;
  for (const auto& dim : r.fields["shape"]) shape.push_back(dim.get<int64_t>());
  return Tensor::view_of(shape, r.kind == "bf16" ? DType::BF16 : DType::F32, d, file_, true);
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
