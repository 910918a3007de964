#pragma once
// The processes of one run: the ranks of an MPI job (`mpirun -np N baq quantize …`) or, without a
// launcher, the single process of a plain run (no MPI call is made then). Only the main thread talks.
//
// Every reduction here has a fixed order, so a given rank count gives bit-identical results on every
// rank and in every run.
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "baq/error.hpp"

namespace baq {

// An error every rank meets identically (a collective check failed): rank 0 reports it once and every
// rank ends normally, where any other error ends the whole job from the rank that met it.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

class Ranks {
 public:
  // The job this process belongs to: MPI is initialised when a launcher started the process
  // (mpirun/mpiexec set its environment), else the process is a job of one.
  static Ranks& world();
  // Called once from main before anything else (MPI may adjust argc/argv).
  static void init(int* argc, char*** argv);
  // Called once before exit; after a normal end of every rank.
  static void finalize();
  // Ends every rank of the job now with `code` (after this rank printed why).
  [[noreturn]] static void abort(int code);

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  bool distributed() const { return size_ > 1; }

  // data ← Σ_ranks data, summed in rank order ((d₀ + d₁) + d₂ …) in chunks, the same bits on every rank.
  void sum_in_rank_order(std::span<double> data) const;
  // `bytes` of rank `from` on every rank.
  void broadcast(std::string& bytes, int from) const;
  // Every rank's `bytes`, in rank order, on every rank.
  std::vector<std::string> all_gather(const std::string& bytes) const;
  // `values` (plain numbers) of rank `from` on every rank, resized to its length.
  template <class T>
  void broadcast_values(std::vector<T>& values, int from) const {
    static_assert(std::is_trivially_copyable_v<T>);
    if (!distributed()) return;
    std::string wire(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
    broadcast(wire, from);
    values.resize(wire.size() / sizeof(T));
    if (!wire.empty()) std::memcpy(values.data(), wire.data(), wire.size());
  }

 private:
  Ranks() = default;
  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
};

// Prefixes a message with the rank that produced it when the job has several ("rank 2: …").
std::string rank_prefixed(const std::string& message);

}  // namespace baq

namespace baq {

// What a rank's inputs are, by content: each named part (a file's bytes, the calibration tokens, the
// arguments) as a checksum. Compared across ranks before any work, so ranks reading different copies
// of a checkpoint stop at once instead of writing a model that is neither.
struct InputFingerprint {
  struct Part {
    std::string what;      // compared: "the model", "the model's config.json", "the calibration windows"
    std::string checksum;  // compared: size and CRC-32
    std::string path;      // named in the error (it may differ between hosts)
  };
  std::vector<Part> parts;
  // A file (size and CRC-32 of its bytes, summed in parallel), or a folder's regular files by name.
  void add_path(const std::string& what, const std::string& path);
  void add_bytes(const std::string& what, const void* data, uint64_t n, const std::string& path = "");
};

// Fails on every rank alike (CollectiveError) when any rank's fingerprint differs from rank 0's, naming
// the first such rank and part.
void check_same_inputs(const Ranks& ranks, const InputFingerprint& mine);

}  // namespace baq
