// GPTQ and RTN on square layers up to 4096 wide (a 7B model's attention projections), and the
// Hessian accumulation (syrk) that feeds them. GPTQ's cost is reported next to RTN's as a ratio
// in the counters (both measured in this run).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <map>
#include <random>
#include <vector>

#include "baq/blas.hpp"
#include "baq/memory.hpp"
#include "baq/pack.hpp"
#include "baq/quant.hpp"
#include "machine_bounds.hpp"

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

// GPTQ as `baq quantize` runs it by default (4 bits, one grid per row, clip search on or off): what
// the range search costs beside the solve (a TinyLlama-wide 2048 × 2048 layer).
void BM_GptqClipSearch(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const Layer& l = layer(n);
  baq::QuantSettings s;
  s.bits = 4;
  s.clip_search = state.range(1) != 0;
  for (auto _ : state) benchmark::DoNotOptimize(baq::quantize_gptq(l.w.data(), n, n, l.h.data(), s));
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n) * n, benchmark::Counter::kIsIterationInvariantRate);
}

// GPTQ on TinyLlama's two solve shapes (mlp.gate: 5632 × 2048, mlp.down: 2048 × 5632), as `baq quantize`
// runs it (4 bits, one grid per row, clip search), the Hessian factor made afresh each time: the
// solve's rate in GFLOP/s of its counted work (rows·cols² for the updates, cols³/3 for the factor),
// next to the sgemm rate, which is what quantize's wall is measured against.
void BM_GptqSolve(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1));
  const Layer& l = layer(cols);
  std::mt19937 rng(rows);
  std::normal_distribution<float> normal;
  std::vector<float> w(static_cast<size_t>(rows) * cols);
  for (auto& v : w) v = normal(rng);
  baq::QuantSettings s;
  s.bits = 4;
  s.clip_search = true;
  for (auto _ : state) {
    baq::release_gptq_factor_cache();
    benchmark::DoNotOptimize(baq::quantize_gptq(w.data(), rows, cols, l.h.data(), s));
  }
  const double flops = static_cast<double>(rows) * cols * cols + 1.0 / 3.0 * cols * static_cast<double>(cols) * cols;
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Sgemm(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a), c(a);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

// One token through an n×n linear (a matrix-vector product, what generation does per layer): the
// packed layer (BAQ-like mixed levels 3..15 per column, per-row grids) as generation runs it — its
// planes twin under AVX-512 VNNI (4-bit planes here), else the radix tiles — against the F32 sgemv
// over the same weights.
const baq::PackedLinear& packed_layer(int n) {
  static std::map<int, baq::PackedLinear> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  const Layer& l = layer(n);
  std::mt19937 rng(n + 1);
  std::vector<int> levels(static_cast<size_t>(n));
  for (auto& L : levels) L = 3 + static_cast<int>(rng() % 13);
  baq::QuantSettings s;
  s.bits = 3;
  const baq::QuantizedMatrix q = baq::quantize_gptq(l.w.data(), n, n, l.h.data(), s, "bench", &levels);
  baq::PackedLinear p = baq::pack_linear(q, s);
  p.prepare();
  return cache.emplace(n, std::move(p)).first->second;
}

void BM_MatvecF32(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const Layer& l = layer(n);
  std::vector<float> x(static_cast<size_t>(n), 0.5f), y(static_cast<size_t>(n));
  for (auto _ : state) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, n, 1.0f, l.w.data(), n, x.data(), 1, 0.0f, y.data(), 1);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n) * n, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_MatvecPacked(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const baq::PackedLinear& p = packed_layer(n);
  std::vector<float> x(static_cast<size_t>(n), 0.5f), y(static_cast<size_t>(n));
  for (auto _ : state) {
    baq::packed_matmul(x.data(), 1, p, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n) * n, benchmark::Counter::kIsIterationInvariantRate);
}

// Uniform b-bit codes (the planes layout, per-row grids): one token, on one core (rows on this thread).
const baq::PackedLinear& planes_layer(int n, int bits) {
  static std::map<std::pair<int, int>, baq::PackedLinear> cache;
  auto it = cache.find({n, bits});
  if (it != cache.end()) return it->second;
  const Layer& l = layer(n);
  baq::QuantSettings s;
  s.bits = bits;
  const baq::QuantizedMatrix q = baq::quantize_rtn(l.w.data(), n, n, s);
  return cache.emplace(std::make_pair(n, bits), baq::pack_linear(q, s)).first->second;
}

void BM_MatvecPlanesOneCore(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0)), bits = static_cast<int>(state.range(1));
  const baq::PackedLinear& p = planes_layer(n, bits);
  std::vector<float> x(static_cast<size_t>(n), 0.5f), y(static_cast<size_t>(n));
  for (auto _ : state) {
    baq::packed_matvec_rows(x.data(), p, 0, p.rows, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n) * n, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes/s"] = benchmark::Counter(static_cast<double>(p.code_bytes()), benchmark::Counter::kIsIterationInvariantRate);
}

// One token through a model's worth of b-bit layers (24 copies of a 4096 × 4096 layer: 96 MB at 2
// bits, three times the L3), every thread, as generation reads them: the codes come from memory, so
// the bound is the stream read measured in the same run ("of stream" = code bytes/s ÷ stream).
void BM_MatvecPlanesFromMemory(benchmark::State& state) {
  const int n = 4096, bits = static_cast<int>(state.range(0)), copies = 24;
  static const double stream = baq::bench::stream_bandwidth();
  const std::vector<baq::PackedLinear> layers(static_cast<size_t>(copies), planes_layer(n, bits));
  std::vector<float> x(static_cast<size_t>(n), 0.5f), y(static_cast<size_t>(n));
  double bytes = 0;
  for (const auto& p : layers) bytes += static_cast<double>(p.code_bytes());
  for (auto _ : state) {
    for (const auto& p : layers) baq::packed_matmul(x.data(), 1, p, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n) * n * copies, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["stream"] = stream;
  state.counters["of stream"] = benchmark::Counter(bytes / stream, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_MatvecPlanesOneCore)->ArgsProduct({{256, 768, 4096}, {2, 3, 4}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MatvecPlanesFromMemory)->DenseRange(2, 4)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MatvecF32)->Arg(1024)->Arg(4096)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MatvecPacked)->Arg(1024)->Arg(4096)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Rtn)->Arg(1024)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gptq)->Arg(1024)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_Sgemm)->Arg(2048)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GptqSolve)->Args({5632, 2048})->Args({2048, 5632})->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_Sgemm)->Arg(2048)->Unit(benchmark::kMillisecond)->Name("BM_Sgemm_after");
BENCHMARK(BM_GptqClipSearch)->ArgsProduct({{2048, 4096}, {0, 1}})->Unit(benchmark::kMillisecond)->Iterations(2);

}  // namespace

int main(int argc, char** argv) {
  baq::use_huge_pages(argv);  // as the baq binary runs
  baq::configure_blas();
  baq::retain_freed_memory();  // as the baq binary runs: GPTQSolve's buffers reused, not faulted in again
  baq::set_radix_twins(true);  // as generation runs radix (BAQ) layers
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
