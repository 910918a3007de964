#include <random>

#include "baq/calibrate.hpp"
#include "baq/error.hpp"

namespace baq {

std::vector<int> sample_calibration_windows(std::span<const int> tokens, int nsamples, int seqlen, uint64_t seed) {
  if (nsamples < 1 || seqlen < 2) fail("calibration needs at least one window of 2 tokens");
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < seqlen + 1)
    fail("calibration text has {} tokens, fewer than one window of {} + 1; pass a longer text or a smaller --seqlen", n,
         seqlen);
  // mt19937_64 and our own reduction of its output: std::uniform_int_distribution is not specified
  // bit for bit, and the same seed must give the same windows everywhere.
  std::mt19937_64 rng(seed);
  const uint64_t range = static_cast<uint64_t>(n - seqlen);
  std::vector<int> out;
  out.reserve(static_cast<size_t>(nsamples) * seqlen);
  for (int i = 0; i < nsamples; ++i) {
    const int64_t start = static_cast<int64_t>(rng() % range);
    out.insert(out.end(), tokens.begin() + start, tokens.begin() + start + seqlen);
  }
  return out;
}

}  // namespace baq
