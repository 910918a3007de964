#include "baq/blas.hpp"

#include <cblas.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

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

}  // namespace

void configure_blas() {
  static const bool done = [] {
    if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return true;
    if (blas_core_name() != "Prescott") return true;
    const char* core = best_core_type();
    // Only a DYNAMIC_ARCH OpenBLAS exports these; any other BLAS is left as it is.
    using Hook = void (*)();
    auto quit = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
    auto init = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
    if (core == nullptr || quit == nullptr || init == nullptr) return true;
    // gotoblas_dynamic_init() reads OPENBLAS_CORETYPE to pick the kernel table, then initialises it.
    ::setenv("OPENBLAS_CORETYPE", core, 0);
    quit();
    init();
    ::unsetenv("OPENBLAS_CORETYPE");
    return true;
  }();
  (void)done;
}

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name != nullptr ? name : "";
}

}  // namespace baq
