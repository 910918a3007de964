#include "torch_writer.hpp"

#include <zlib.h>

#include <cstring>

namespace baq::test {

namespace {

template <class T>
void put_le(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

}  // namespace

PickleBuilder& PickleBuilder::proto(int version) {
  bytes_ += '\x80';
  bytes_ += static_cast<char>(version);
  return *this;
}

PickleBuilder& PickleBuilder::op(uint8_t opcode) {
  bytes_ += static_cast<char>(opcode);
  return *this;
}

PickleBuilder& PickleBuilder::str(const std::string& s) {
  bytes_ += 'X';
  put_le<uint32_t>(bytes_, static_cast<uint32_t>(s.size()));
  bytes_ += s;
  return *this;
}

PickleBuilder& PickleBuilder::integer(int64_t v) {
  if (v >= 0 && v < 256) {
    bytes_ += 'K';
    put_le<uint8_t>(bytes_, static_cast<uint8_t>(v));
  } else if (v >= 0 && v < 65536) {
    bytes_ += 'M';
    put_le<uint16_t>(bytes_, static_cast<uint16_t>(v));
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    bytes_ += 'J';
    put_le<int32_t>(bytes_, static_cast<int32_t>(v));
  } else {
    bytes_ += '\x8a';
    bytes_ += '\x08';
    put_le<int64_t>(bytes_, v);
  }
  return *this;
}

PickleBuilder& PickleBuilder::global(const std::string& module, const std::string& name) {
  bytes_ += 'c' + module + '\n' + name + '\n';
  return *this;
}

PickleBuilder& PickleBuilder::put(uint8_t slot) {
  bytes_ += 'q';
  bytes_ += static_cast<char>(slot);
  return *this;
}

PickleBuilder& PickleBuilder::get(uint8_t slot) {
  bytes_ += 'h';
  bytes_ += static_cast<char>(slot);
  return *this;
}

PickleBuilder& PickleBuilder::raw(const std::string& bytes) {
  bytes_ += bytes;
  return *this;
}

std::string torch_state_dict_pickle(const std::vector<TorchTensorSpec>& tensors) {
  // Memo slots: 0 the dict, 1 _rebuild_tensor_v2, 2 OrderedDict; storage type globals from 3 on.
  PickleBuilder p;
  p.proto(2).global("collections", "OrderedDict").put(2).op(')').op('R').put(0).mark();
  std::vector<std::string> type_slots;
  bool rebuild_memoized = false;
  for (const TorchTensorSpec& t : tensors) {
    p.str(t.name);
    if (rebuild_memoized) {
      p.get(1);
    } else {
      p.global("torch._utils", "_rebuild_tensor_v2").put(1);
      rebuild_memoized = true;
    }
    p.mark().mark().str("storage");
    size_t slot = 0;
    while (slot < type_slots.size() && type_slots[slot] != t.storage_type) ++slot;
    if (slot < type_slots.size()) {
      p.get(static_cast<uint8_t>(3 + slot));
    } else {
      p.global("torch", t.storage_type).put(static_cast<uint8_t>(3 + slot));
      type_slots.push_back(t.storage_type);
    }
    p.str(t.key).str("cpu").integer(t.storage_numel).op('t').op('Q');
    p.integer(t.offset);
    std::vector<int64_t> stride = t.stride;
    if (stride.empty()) {
      stride.assign(t.shape.size(), 1);
      for (size_t d = t.shape.size(); d-- > 1;) stride[d - 1] = stride[d] * t.shape[d];
    }
    p.mark();
    for (int64_t d : t.shape) p.integer(d);
    p.op('t').mark();
    for (int64_t s : stride) p.integer(s);
    p.op('t').op(0x89).get(2).op(')').op('R').op('t').op('R');
  }
  p.op('u');
  // state_dict()'s `_metadata` attribute: {'_metadata': OrderedDict([('', {'version': 1})])}.
  p.op('}').str("_metadata").get(2).op(')').op('R').str("").op('}').str("version").integer(1).op('s').op('s').op('s');
  p.op('b').stop();
  return p.bytes();
}

void write_torch_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries,
                     bool zip64) {
  std::string out, directory;
  for (const auto& [name, data] : entries) {
    const uint64_t local = out.size();
    // Pad through an extra field so the data starts on a 64-byte boundary, as torch.save does.
    const uint64_t unpadded = local + 30 + name.size() + 4;
    const uint16_t pad = static_cast<uint16_t>((64 - unpadded % 64) % 64);
    const uint32_t crc = static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(data.data()), data.size()));
    put_le<uint32_t>(out, 0x04034b50);
    put_le<uint16_t>(out, zip64 ? 45 : 20);
    put_le<uint16_t>(out, 0);
    put_le<uint16_t>(out, 0);  // stored
    put_le<uint32_t>(out, 0);  // time, date
    put_le<uint32_t>(out, crc);
    put_le<uint32_t>(out, static_cast<uint32_t>(data.size()));
    put_le<uint32_t>(out, static_cast<uint32_t>(data.size()));
    put_le<uint16_t>(out, static_cast<uint16_t>(name.size()));
    put_le<uint16_t>(out, static_cast<uint16_t>(4 + pad));
    out += name;
    put_le<uint16_t>(out, 0x4246);  // torch's "FB" padding field
    put_le<uint16_t>(out, pad);
    out.append(pad, 'Z');
    out += data;

    std::string extra;
    if (zip64) {
      put_le<uint16_t>(extra, 1);
      put_le<uint16_t>(extra, 24);
      put_le<uint64_t>(extra, data.size());
      put_le<uint64_t>(extra, data.size());
      put_le<uint64_t>(extra, local);
    }
    put_le<uint32_t>(directory, 0x02014b50);
    put_le<uint16_t>(directory, 45);
    put_le<uint16_t>(directory, zip64 ? 45 : 20);
    put_le<uint16_t>(directory, 0);
    put_le<uint16_t>(directory, 0);
    put_le<uint32_t>(directory, 0);
    put_le<uint32_t>(directory, crc);
    put_le<uint32_t>(directory, zip64 ? 0xFFFFFFFF : static_cast<uint32_t>(data.size()));
    put_le<uint32_t>(directory, zip64 ? 0xFFFFFFFF : static_cast<uint32_t>(data.size()));
    put_le<uint16_t>(directory, static_cast<uint16_t>(name.size()));
    put_le<uint16_t>(directory, static_cast<uint16_t>(extra.size()));
    put_le<uint16_t>(directory, 0);
    put_le<uint16_t>(directory, 0);
    put_le<uint16_t>(directory, 0);
    put_le<uint32_t>(directory, 0);
    put_le<uint32_t>(directory, zip64 ? 0xFFFFFFFF : static_cast<uint32_t>(local));
    directory += name + extra;
  }
  const uint64_t dir_offset = out.size();
  out += directory;
  if (zip64) {
    const uint64_t z = out.size();
    put_le<uint32_t>(out, 0x06064b50);
    put_le<uint64_t>(out, 44);
    put_le<uint16_t>(out, 45);
    put_le<uint16_t>(out, 45);
    put_le<uint32_t>(out, 0);
    put_le<uint32_t>(out, 0);
    put_le<uint64_t>(out, entries.size());
    put_le<uint64_t>(out, entries.size());
    put_le<uint64_t>(out, directory.size());
    put_le<uint64_t>(out, dir_offset);
    put_le<uint32_t>(out, 0x07064b50);
    put_le<uint32_t>(out, 0);
    put_le<uint64_t>(out, z);
    put_le<uint32_t>(out, 1);
  }
  put_le<uint32_t>(out, 0x06054b50);
  put_le<uint32_t>(out, 0);
  put_le<uint16_t>(out, zip64 ? 0xFFFF : static_cast<uint16_t>(entries.size()));
  put_le<uint16_t>(out, zip64 ? 0xFFFF : static_cast<uint16_t>(entries.size()));
  put_le<uint32_t>(out, zip64 ? 0xFFFFFFFF : static_cast<uint32_t>(directory.size()));
  put_le<uint32_t>(out, zip64 ? 0xFFFFFFFF : static_cast<uint32_t>(dir_offset));
  put_le<uint16_t>(out, 0);
  write_bytes(path, out);
}

std::string storage_bytes(const std::vector<double>& values, const std::string& storage_type) {
  std::string out;
  for (double v : values) {
    const float f = static_cast<float>(v);
    if (storage_type == "FloatStorage")
      put_le<float>(out, f);
    else if (storage_type == "HalfStorage")
      put_le<uint16_t>(out, f32_to_f16(f));
    else
      put_le<uint16_t>(out, f32_to_bf16(f));
  }
  return out;
}

void write_torch_checkpoint(const std::string& path, const Weights& w, const Shapes& shapes,
                            const std::string& storage_type, const std::string& archive, bool zip64) {
  std::vector<TorchTensorSpec> specs;
  std::vector<std::pair<std::string, std::string>> entries;
  entries.emplace_back(archive + "/data.pkl", "");
  for (const auto& [name, values] : w) {
    TorchTensorSpec t;
    t.name = name;
    t.storage_type = storage_type;
    t.key = std::to_string(specs.size());
    t.storage_numel = static_cast<int64_t>(values.size());
    t.shape = shapes.at(name);
    specs.push_back(t);
    entries.emplace_back(archive + "/data/" + t.key, storage_bytes(values, storage_type));
  }
  entries[0].second = torch_state_dict_pickle(specs);
  entries.emplace_back(archive + "/version", "3\n");
  entries.emplace_back(archive + "/byteorder", "little");
  write_torch_zip(path, entries, zip64);
}

}  // namespace baq::test
