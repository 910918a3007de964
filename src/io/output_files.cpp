#include "baq/output.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "baq/error.hpp"

namespace baq {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTmpMarker = ".baq-tmp.";

// Temporaries in progress, in fixed storage a signal handler may read (no allocation, no locks).
constexpr int kSlots = 32;
constexpr size_t kPathMax = 4096;
struct Slot {
  std::atomic<bool> used{false};
  char path[kPathMax];
};
Slot g_slots[kSlots];

int register_temporary(const std::string& path) {
  if (path.size() >= kPathMax) return -1;
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (g_slots[i].used.load() || !g_slots[i].used.compare_exchange_strong(expected, true)) continue;
    std::memcpy(g_slots[i].path, path.c_str(), path.size() + 1);
    return i;
  }
  return -1;  // more than kSlots outputs at once: still removed on failure, only not on a signal
}

void release_temporary(int slot) {
  if (slot >= 0) g_slots[slot].used.store(false);
}

extern "C" void cleanup_and_reraise(int sig) {
  for (auto& s : g_slots)
    if (s.used.load()) ::unlink(s.path);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

struct FileId {
  uint64_t dev = 0, ino = 0;
  bool dir = false;
};

bool identify(const std::string& path, FileId& id) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  id = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), S_ISDIR(st.st_mode)};
  return true;
}

std::string folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// Removes the temporaries of `name` in `dir` that a run no longer alive left behind (SIGKILL, power
// loss). Only names of baq's own pattern are touched, and only when their process is gone.
void sweep_stale_temporaries(const std::string& dir, const std::string& name) {
  const std::string prefix = "." + name + kTmpMarker;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string entry = e->d_name;
    if (!entry.starts_with(prefix)) continue;
    const std::string pid_text = entry.substr(prefix.size());
    if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    const std::string full = (fs::path(dir) / entry).string();
    struct stat st {};
    if (::lstat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode)) ::unlink(full.c_str());
  }
  ::closedir(d);
}

}  // namespace

void InputSet::add(const std::string& path) {
  FileId id;
  if (!identify(path, id)) return;
  ids_.push_back({id.dev, id.ino, path});
  if (!id.dir) return;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    FileId inner;
    if (entry.is_regular_file(ec) && identify(entry.path().string(), inner))
      ids_.push_back({inner.dev, inner.ino, entry.path().string()});
  }
}

std::string InputSet::find(const std::string& path) const {
  FileId id;
  if (!identify(path, id)) return {};
  for (const Id& i : ids_)
    if (i.dev == id.dev && i.ino == id.ino) return i.path;
  return {};
}

void check_output_file(const std::string& path, const InputSet& inputs) {
  if (path.empty()) fail("an output path is empty");
  if (const std::string input = inputs.find(path); !input.empty())
    fail("{}: refusing to write an output over an input of this run ({})", path, input);
  FileId id;
  if (identify(path, id) && id.dir) fail("{}: is a folder; an output file cannot replace it", path);
  const std::string dir = folder_of(path);
  if (!identify(dir, id) || !id.dir) fail("{}: the folder '{}' does not exist", path, dir);
}

namespace {

// A plain file name: no separator, not "." or "..", no NUL.
bool plain_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

}  // namespace

OutputFolder::OutputFolder(std::string dir, const InputSet& inputs) : OutputFolder(std::move(dir), inputs, true) {}

void OutputFolder::check(const std::string& dir, const InputSet& inputs) { OutputFolder(dir, inputs, false); }

OutputFolder::OutputFolder(std::string dir, const InputSet& inputs, bool create) : dir_(std::move(dir)) {
  if (dir_.empty()) fail("an output folder path is empty");
  FileId id;
  if (!identify(dir_, id)) {
    const std::string parent = folder_of(fs::path(dir_).lexically_normal().string());
    FileId pid;
    if (!identify(parent, pid) || !pid.dir) fail("{}: the folder '{}' it would be created in does not exist", dir_, parent);
    if (!create) return;
    std::error_code ec;
    if (!fs::create_directory(dir_, ec) || ec) fail("{}: cannot create the output folder ({})", dir_, ec.message());
    return;
  }
  if (!id.dir) fail("{}: exists and is not a folder", dir_);
  if (const std::string input = inputs.find(dir_); !input.empty())
    fail("{}: refusing to write into a folder that is an input of this run ({})", dir_, input);
  std::error_code ec;
  bool empty = true, manifest = false;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == kOutputManifest) manifest = true;
    else if (name.find(kTmpMarker) == std::string::npos) empty = false;
    if (const std::string input = inputs.find(entry.path().string()); !input.empty())
      fail("{}: refusing to write into a folder holding an input of this run ({})", dir_, input);
  }
  if (ec) fail("{}: cannot list the output folder ({})", dir_, ec.message());
  if (!empty && !manifest) fail("{}: exists, is not empty and was not written by baq; name a new or empty folder", dir_);
  if (manifest) {
    const std::string path = (fs::path(dir_) / kOutputManifest).string();
    try {
      std::ifstream in(path);
      const nlohmann::json j = nlohmann::json::parse(in);
      for (const auto& f : j.at("files"))
        previous_.push_back({f.at("name").get<std::string>(), f.at("size").get<uint64_t>(), f.at("mtime_ns").get<int64_t>(),
                             f.at("inode").get<uint64_t>()});
    } catch (const nlohmann::json::exception&) {
      fail("{}: not a baq output manifest; name a new or empty folder", path);
    }
    // Checked now, before a long run: a file baq wrote that someone changed since is not baq's to replace.
    for (const Written& w : previous_) {
      const Written now = stat_of(w.name);
      if (!plain_name(w.name)) fail("{}: not a baq output manifest; name a new or empty folder", path);
      if (now.mtime_ns >= 0 && (now.size != w.size || now.mtime_ns != w.mtime_ns || now.inode != w.inode))
        fail("{}: changed since baq wrote it; refusing to replace it", (fs::path(dir_) / w.name).string());
    }
  }
}

OutputFolder::Written OutputFolder::stat_of(const std::string& name) const {
  struct stat st {};
  const std::string path = (fs::path(dir_) / name).string();
  if (::lstat(path.c_str(), &st) != 0) return {name, 0, -1, 0};
  return {name, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
          static_cast<uint64_t>(st.st_ino)};
}

std::string OutputFolder::file(const std::string& name) {
  if (!plain_name(name) || name == kOutputManifest) fail("{}: '{}' is not a plain file name for an output", dir_, name);
  const std::string path = (fs::path(dir_) / name).string();
  const Written now = stat_of(name);
  if (now.mtime_ns >= 0) {
    // Only a file exactly as baq left it (same inode, size and modification time) may be replaced.
    const auto it = std::find_if(previous_.begin(), previous_.end(), [&](const Written& w) { return w.name == name; });
    if (it == previous_.end()) fail("{}: exists and was not written by baq; refusing to replace it", path);
    if (it->size != now.size || it->mtime_ns != now.mtime_ns || it->inode != now.inode)
      fail("{}: changed since baq wrote it; refusing to replace it", path);
  }
  if (std::find(written_.begin(), written_.end(), name) == written_.end()) written_.push_back(name);
  return path;
}

void OutputFolder::finish() {
  nlohmann::json files = nlohmann::json::array();
  for (const Written& w : previous_)
    if (std::find(written_.begin(), written_.end(), w.name) == written_.end())
      files.push_back({{"name", w.name}, {"size", w.size}, {"mtime_ns", w.mtime_ns}, {"inode", w.inode}});
  for (const std::string& name : written_) {
    const Written w = stat_of(name);
    files.push_back({{"name", w.name}, {"size", w.size}, {"mtime_ns", w.mtime_ns}, {"inode", w.inode}});
  }
  const nlohmann::json manifest = {{"written_by", "baq"}, {"files", files}};
  write_file_atomically((fs::path(dir_) / kOutputManifest).string(), manifest.dump(2) + "\n");
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  const std::string dir = folder_of(path_);
  FileId id;
  if (!identify(dir, id) || !id.dir) fail("{}: the folder '{}' does not exist", path_, dir);
  if (identify(path_, id) && id.dir) fail("{}: is a folder; an output file cannot replace it", path_);
  const std::string name = fs::path(path_).filename().string();
  sweep_stale_temporaries(dir, name);
  tmp_ = (fs::path(dir) / ("." + name + kTmpMarker + std::to_string(::getpid()))).string();
  slot_ = register_temporary(tmp_);
  out_.open(tmp_, std::ios::binary | std::ios::trunc);
  if (!out_) {
    release_temporary(slot_);
    fail("{}: cannot create the output ({})", path_, std::strerror(errno));
  }
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  out_.close();
  ::unlink(tmp_.c_str());
  release_temporary(slot_);
}

void AtomicFile::commit() {
  out_.flush();
  if (!out_) fail("{}: write failed (disk full?)", path_);
  out_.close();
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail("{}: cannot move the finished output into place ({})", path_, std::strerror(errno));
  committed_ = true;
  release_temporary(slot_);
}

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& fill) {
  AtomicFile f(path);
  fill(f.stream());
  f.commit();
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  write_file_atomically(path, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
}

void install_signal_cleanup() {
  struct sigaction sa {};
  sa.sa_handler = cleanup_and_reraise;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

}  // namespace baq
