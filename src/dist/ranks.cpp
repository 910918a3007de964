#include "baq/ranks.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace baq {

namespace {

// Set by mpirun/mpiexec (Open MPI, PMIx, Hydra): only then is this process one rank of a job.
bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    fail("MPI {} failed: {}", what, std::string(text, static_cast<size_t>(len)));
  }
}

// MPI counts are ints: large buffers go in pieces.
constexpr int64_t kPiece = int64_t{1} << 30;

}  // namespace

Ranks& Ranks::world() {
  static Ranks ranks;
  return ranks;
}

void Ranks::init(int* argc, char*** argv) {
  Ranks& w = world();
  if (w.mpi_ || !launched_by_mpi()) return;
  int provided = 0;
  // Only the main thread calls MPI; OpenMP threads compute between calls.
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init");
  // Errors come back as codes and become one-line exceptions (the default handler aborts silently).
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  w.mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size_);
}

void Ranks::finalize() {
  Ranks& w = world();
  if (!w.mpi_) return;
  w.mpi_ = false;
  MPI_Finalize();
}

void Ranks::abort(int code) {
  if (world().mpi_) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

void Ranks::sum_in_rank_order(std::span<double> data) const {
  if (size_ == 1) return;
  // A chain: rank r receives the sum of ranks 0..r−1, adds its own and passes it on; the last rank
  // holds the total and broadcasts it. Chunks keep the buffer small and overlap the links.
  constexpr size_t kChunk = size_t{1} << 22;  // 32 MiB of doubles
  std::vector<double> incoming(std::min(kChunk, data.size()));
  for (size_t at = 0; at < data.size(); at += kChunk) {
    const int n = static_cast<int>(std::min(kChunk, data.size() - at));
    double* mine = data.data() + at;
    if (rank_ > 0) {
      check(MPI_Recv(incoming.data(), n, MPI_DOUBLE, rank_ - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "receive of a partial sum");
      for (int i = 0; i < n; ++i) mine[i] = incoming[static_cast<size_t>(i)] + mine[i];
    }
    if (rank_ + 1 < size_) check(MPI_Send(mine, n, MPI_DOUBLE, rank_ + 1, 0, MPI_COMM_WORLD), "send of a partial sum");
    check(MPI_Bcast(mine, n, MPI_DOUBLE, size_ - 1, MPI_COMM_WORLD), "broadcast of a sum");
  }
}

void Ranks::broadcast(std::string& bytes, int from) const {
  if (size_ == 1) return;
  uint64_t n = bytes.size();
  check(MPI_Bcast(&n, 1, MPI_UINT64_T, from, MPI_COMM_WORLD), "broadcast");
  bytes.resize(n);
  for (uint64_t at = 0; at < n; at += kPiece) {
    const int len = static_cast<int>(std::min<uint64_t>(kPiece, n - at));
    check(MPI_Bcast(bytes.data() + at, len, MPI_BYTE, from, MPI_COMM_WORLD), "broadcast");
  }
}

std::vector<std::string> Ranks::all_gather(const std::string& bytes) const {
  if (size_ == 1) return {bytes};
  std::vector<std::string> all(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    std::string b = r == rank_ ? bytes : std::string();
    broadcast(b, r);
    all[static_cast<size_t>(r)] = std::move(b);
  }
  return all;
}

std::string rank_prefixed(const std::string& message) {
  const Ranks& w = Ranks::world();
  return w.distributed() ? fmt::format("rank {}: {}", w.rank(), message) : message;
}

}  // namespace baq
