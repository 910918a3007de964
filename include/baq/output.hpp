#pragma once
// Everything baq writes goes through here. An output is built under a temporary name beside its target
// and renamed into place once complete; a target that is one of the run's inputs is refused, whatever
// path names it; an existing folder is written into only when it is empty or an earlier baq output.
// Nothing is ever deleted but baq's own temporaries: on failure, on SIGINT/SIGTERM/SIGHUP, and the
// stale ones a killed run left (their process is gone).
#include <cstdint>
#include <fstream>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace baq {

// The files and folders a run reads, by identity (device and inode), so a symlink, `..` or a hard link
// naming one of them is recognised as that input.
class InputSet {
 public:
  // A file, or a folder together with every file directly inside it. Missing paths are ignored (the
  // reader reports them).
  void add(const std::string& path);
  // The input `path` is (its name as given to add()), or empty when it is none of them.
  std::string find(const std::string& path) const;

 private:
  struct Id {
    uint64_t dev, ino;
    std::string path;
  };
  std::vector<Id> ids_;
};

// Refuses `path` as an output file: it is one of the inputs, or an existing folder, or its folder does
// not exist. An existing regular file is fine (it will be replaced atomically).
void check_output_file(const std::string& path, const InputSet& inputs);

// An output folder: created when missing; an existing one must be a folder that is not (and holds no)
// input of the run, and either empty or an earlier baq output (it holds baq's manifest). Files are
// written into it one at a time, each atomically; a file already there is replaced only when the
// manifest says baq wrote it and it is unchanged since (inode, size, modification time). finish()
// records what baq wrote.
inline constexpr const char* kOutputManifest = ".baq-output.json";
class OutputFolder {
 public:
  OutputFolder(std::string dir, const InputSet& inputs);
  // The same checks without creating anything, so a long run can be refused before it starts.
  static void check(const std::string& dir, const InputSet& inputs);
  const std::string& dir() const { return dir_; }
  // The path of `name` (one plain file name) in the folder, checked as above.
  std::string file(const std::string& name);
  void finish();

 private:
  struct Written {
    std::string name;
    uint64_t size = 0;
    int64_t mtime_ns = -1;  // -1: absent
    uint64_t inode = 0;
  };
  OutputFolder(std::string dir, const InputSet& inputs, bool create);
  Written stat_of(const std::string& name) const;
  std::string dir_;
  std::vector<Written> previous_;
  std::vector<std::string> written_;
};

// A file written under a temporary name in its target's folder (".NAME.baq-tmp.PID") and renamed over
// the target by commit(); destroyed uncommitted (an exception, a signal) the temporary goes away.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  std::ostream& stream() { return out_; }
  const std::string& path() const { return path_; }
  void commit();

 private:
  std::string path_, tmp_;
  std::ofstream out_;
  int slot_ = -1;
  bool committed_ = false;
};

// The whole of `path` through an AtomicFile: `fill` streams the contents (it may throw).
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& fill);
void write_file_atomically(const std::string& path, const std::string& bytes);

// SIGINT, SIGTERM and SIGHUP remove every temporary output in progress, then end the process as the
// signal would have. Called once by the CLI.
void install_signal_cleanup();

}  // namespace baq
