#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "baq/io.hpp"
#include "baq/ranks.hpp"

namespace baq {

namespace {

// CRC-32 of n bytes, 64 MiB pieces summed on every thread and combined in order.
uint32_t parallel_crc32(const uint8_t* data, uint64_t n) {
  constexpr uint64_t kPiece = uint64_t{64} << 20;
  const int64_t pieces = static_cast<int64_t>((n + kPiece - 1) / kPiece);
  std::vector<uLong> crc(static_cast<size_t>(pieces));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < pieces; ++i) {
    const uint64_t at = static_cast<uint64_t>(i) * kPiece;
    crc[static_cast<size_t>(i)] = crc32(crc32(0L, Z_NULL, 0), data + at, static_cast<uInt>(std::min(kPiece, n - at)));
  }
  uLong all = crc32(0L, Z_NULL, 0);
  for (int64_t i = 0; i < pieces; ++i) {
    const uint64_t at = static_cast<uint64_t>(i) * kPiece;
    all = crc32_combine(all, crc[static_cast<size_t>(i)], static_cast<z_off_t>(std::min(kPiece, n - at)));
  }
  return static_cast<uint32_t>(all);
}

}  // namespace

void InputFingerprint::add_bytes(const std::string& what, const void* data, uint64_t n, const std::string& path) {
  parts.push_back({what, fmt::format("{} bytes, crc32 {:08x}", n, parallel_crc32(static_cast<const uint8_t*>(data), n)), path});
}

void InputFingerprint::add_path(const std::string& what, const std::string& path) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  const bool folder = fs::is_directory(path);
  if (folder) {
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  for (const fs::path& f : files) {
    const std::string name = folder ? fmt::format("{}'s {}", what, f.filename().string()) : what;
    if (fs::file_size(f) == 0) {
      parts.push_back({name, "0 bytes", f.string()});
      continue;
    }
    const MappedFile m(f.string());
    add_bytes(name, m.data(), m.size(), f.string());
  }
}

void check_same_inputs(const Ranks& ranks, const InputFingerprint& mine) {
  if (!ranks.distributed()) return;
  nlohmann::json j = nlohmann::json::array();
  for (const auto& p : mine.parts) j.push_back({p.what, p.checksum, p.path});
  using Parts = std::vector<std::array<std::string, 3>>;
  std::vector<Parts> all;
  for (const std::string& bytes : ranks.all_gather(j.dump())) all.push_back(nlohmann::json::parse(bytes).get<Parts>());
  const Parts& root = all[0];
  for (int r = 1; r < ranks.size(); ++r) {
    const Parts& other = all[static_cast<size_t>(r)];
    for (size_t i = 0; i < std::max(root.size(), other.size()); ++i) {
      if (i < root.size() && i < other.size() && root[i][0] == other[i][0] && root[i][1] == other[i][1]) continue;
      if (i >= root.size() || i >= other.size() || root[i][0] != other[i][0])
        throw CollectiveError(fmt::format("rank {} reads other inputs than rank 0 ({} where rank 0 has {})", r,
                                          i < other.size() ? other[i][0] : "nothing", i < root.size() ? root[i][0] : "nothing"));
      auto where = [](const std::string& path) { return path.empty() ? std::string() : fmt::format(" {}", path); };
      throw CollectiveError(fmt::format("rank {}: {} differs from rank 0's ({}{}; rank 0:{} {})", r, root[i][0],
                                        other[i][1], other[i][2].empty() ? "" : " in" + where(other[i][2]), where(root[i][2]),
                                        root[i][1]));
    }
  }
}

}  // namespace baq
