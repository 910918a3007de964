#pragma once
// What the CPU offers, read once: the kernels pick AVX2/F16C/AVX-512 code paths at run time so one
// binary runs everywhere. (F16C through cpuid: clang's __builtin_cpu_supports does not know it.)
#include <cpuid.h>

// Loops the compiler vectorizes, compiled twice, for AVX2 and for the x86-64 baseline, the version
// picked when the program loads. Not FMA: without it both versions do the same IEEE operations in the
// same order, so results do not depend on the machine. (GCC; other compilers get the baseline.)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BAQ_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BAQ_VECTOR_CLONES
#endif

namespace baq {

inline bool cpu_has_f16c() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
  }();
  return has;
}

// AVX2 + FMA + F16C: the 256-bit kernels.
inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  return has;
}

// AVX-512 F/BW/VL: the 512-bit kernels.
inline bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && cpu_has_avx2_fma();
  return has;
}

}  // namespace baq
