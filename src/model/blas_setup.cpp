#include "baq/blas.hpp"

#include <cblas.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <strings.h>

namespace baq {

namespace {

// The kernel set a CPU with these features runs best, by OpenBLAS's names; null when nothing beats
// the generic one.
const char* best_core_type() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

// Whether OpenBLAS's kernel set `name` already uses vectors as wide as the set `best` (any case).
bool as_wide_as(const char* name, const char* best) {
  for (const char* wide : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (strcasecmp(name, wide) == 0) return true;
  return strcmp(best, "Haswell") == 0 && (strcasecmp(name, "Haswell") == 0 || strcasecmp(name, "Zen") == 0);
}

}  // namespace

void configure_blas() {
  static const bool done = [] {
    const char* core = best_core_type();
    // A kernel set narrower than the CPU's vectors is replaced, whether OpenBLAS picked it (0.3.21
    // falls back to Prescott on recent Xeons) or the environment asked for it (a machine of ours sets
    // OPENBLAS_CORETYPE=Haswell on AVX-512 Zen 5 vCPUs): there Haswell's threaded sgemm, strsm and
    // ssyrk gave different bits for 1 and 2 threads — different quantized weights — and SkylakeX's
    // do not. A set at least as wide, the user's or OpenBLAS's, is kept.
    const char* forced = std::getenv("OPENBLAS_CORETYPE");
    if (core == nullptr || as_wide_as(forced != nullptr ? forced : blas_core_name().c_str(), core)) return true;
    // Only a DYNAMIC_ARCH OpenBLAS exports these; any other BLAS is left as it is.
    using Hook = void (*)();
    auto quit = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
    auto init = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
    if (quit == nullptr || init == nullptr) return true;
    // gotoblas_dynamic_init() reads OPENBLAS_CORETYPE to pick the kernel table, then initialises it;
    // child processes (baq run by the tests, MPI ranks) inherit the choice.
    ::setenv("OPENBLAS_CORETYPE", core, 1);
    quit();
    init();
    return true;
  }();
  (void)done;
}

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name != nullptr ? name : "";
}

}  // namespace baq
