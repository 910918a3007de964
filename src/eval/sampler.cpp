#include "baq/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "baq/error.hpp"

namespace baq {

int sample_token(const float* logits, int vocab, float temperature, float top_p, std::mt19937_64& rng) {
  if (!std::isfinite(temperature) || temperature < 0.0f || !(top_p > 0.0f && top_p <= 1.0f))
    fail("sampling needs a finite temperature ≥ 0 and top-p in (0, 1]");
  if (temperature <= 0.0f) return static_cast<int>(std::max_element(logits, logits + vocab) - logits);
  // Probabilities are exp((l − max)/T); only the most probable tokens are ever sorted: the nucleus is
  // looked for among the top 64, then 256, ... (work over the whole vocabulary is one pass, not a sort).
  thread_local std::vector<double> p;
  thread_local std::vector<int> order;
  p.resize(static_cast<size_t>(vocab));
  const float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int v = 0; v < vocab; ++v) sum += p[static_cast<size_t>(v)] = std::exp((logits[v] - mx) / temperature);
  order.resize(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  // Ties broken by id, so the order (and the draw) is the same on every machine.
  auto more = [&](int a, int b) {
    return p[static_cast<size_t>(a)] != p[static_cast<size_t>(b)] ? p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)] : a < b;
  };
  size_t n = 0;
  double kept = 0;
  for (size_t k = std::min<size_t>(64, order.size());; k = std::min(order.size(), k * 4)) {
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), more);
    n = 0, kept = 0;
    while (n < k && (n == 0 || kept < top_p * sum)) kept += p[static_cast<size_t>(order[n++])];
    if (kept >= top_p * sum || k == order.size()) break;
  }
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
