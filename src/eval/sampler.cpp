#include "baq/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace baq {

int sample_token(const float* logits, int vocab, float temperature, float top_p, std::mt19937_64& rng) {
  if (temperature <= 0.0f) return static_cast<int>(std::max_element(logits, logits + vocab) - logits);
  const float mx = *std::max_element(logits, logits + vocab);
  std::vector<double> p(static_cast<size_t>(vocab));
  double sum = 0;
  for (int v = 0; v < vocab; ++v) sum += p[static_cast<size_t>(v)] = std::exp((logits[v] - mx) / temperature);
  std::vector<int> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
  double kept = 0;
  size_t n = 0;
  while (n < order.size() && (n == 0 || kept < top_p * sum)) kept += p[static_cast<size_t>(order[n++])];
  // Our own draw from the 53 high bits: std::uniform_real_distribution is not bit-specified.
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * kept;
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += p[static_cast<size_t>(order[i])];
    if (u < acc) return order[i];
  }
  return order[n - 1];
}

}  // namespace baq
