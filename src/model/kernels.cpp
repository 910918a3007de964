#include "model/kernels.hpp"

#include "baq/blas.hpp"
#include "model/cpu_features.hpp"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <memory>
#include <stdexcept>

namespace baq::kernels {

namespace {
// Scratch is written before it is read (it holds the last call's values anyway), so a new buffer is
// not zeroed: quantize releases a block's buffers (hundreds of MB) and zeroing them again on one
// thread each block was time the other threads waited.
struct Buffer {
  std::unique_ptr<float[]> data;
  size_t size = 0;
};
thread_local std::vector<Buffer> t_buffers;
}  // namespace

void Scratch::release() {
#pragma omp parallel
  { std::vector<Buffer>().swap(t_buffers); }
}

float* Scratch::get(int slot, size_t n) {
  auto& buffers = t_buffers;
  if (buffers.size() <= static_cast<size_t>(slot)) buffers.resize(static_cast<size_t>(slot) + 1);
  Buffer& b = buffers[static_cast<size_t>(slot)];
  if (b.size < n) {
    b.data.reset();  // before the larger one: never both
    b.size = 0;
    b.data = std::make_unique_for_overwrite<float[]>(n);
    b.size = n;
  }
  return b.data.get();
}

namespace {

__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(DType dtype, const uint16_t* w) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return dtype == DType::BF16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) : _mm256_cvtph_ps(h);
}

// One output row's dot product with x, the weight row converted as it is read.
__attribute__((target("avx2,fma,f16c"))) float dot_avx2(DType dtype, const void* row, const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t j = 0;
  if (dtype == DType::F32) {
    const auto* w = static_cast<const float*>(row);
    for (; j + 16 <= n; j += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_loadu_ps(x + j + 8), acc1);
    }
  } else {
    const auto* w = static_cast<const uint16_t*>(row);
    for (; j + 16 <= n; j += 16) {
      acc0 = _mm256_fmadd_ps(load8(dtype, w + j), _mm256_loadu_ps(x + j), acc0);
      acc1 = _mm256_fmadd_ps(load8(dtype, w + j + 8), _mm256_loadu_ps(x + j + 8), acc1);
    }
  }
  const __m256 s = _mm256_add_ps(acc0, acc1);
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  r = _mm_hadd_ps(r, r);
  r = _mm_hadd_ps(r, r);
  float sum = _mm_cvtss_f32(r);
  if (j < n) {
    float tail[16];
    convert_to_f32(dtype, static_cast<const uint8_t*>(row) + static_cast<size_t>(j) * dtype_size(dtype), n - j, tail);
    for (int64_t t = 0; t < n - j; ++t) sum += tail[t] * x[j + t];
  }
  return sum;
}

float dot_generic(DType dtype, const void* row, const float* x, int64_t n) {
  float buf[256], sum = 0.0f;
  for (int64_t j = 0; j < n; j += 256) {
    const int64_t m = std::min<int64_t>(256, n - j);
    convert_to_f32(dtype, static_cast<const uint8_t*>(row) + static_cast<size_t>(j) * dtype_size(dtype), m, buf);
    for (int64_t t = 0; t < m; ++t) sum += buf[t] * x[j + t];
  }
  return sum;
}

// GCC 12's avx512fintrin.h builds _mm512_cvtph_ps and _mm512_reduce_add_ps from an undefined
// vector (_mm512_undefined_ps), which -Wuninitialized reports in every caller; the lanes it names
// are always overwritten, so the warning is silenced for these two functions only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))) inline __m512 load16(DType dtype, const void* row, int64_t at) {
  if (dtype == DType::F32) return _mm512_loadu_ps(static_cast<const float*>(row) + at);
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + at));
  return dtype == DType::BF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)) : _mm512_cvtph_ps(h);
}

// The same dot product in 512-bit lanes, two accumulators deep.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))) float dot_avx512(DType dtype, const void* row, const float* x,
                                                                                   int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t j = 0;
  // Lines 8 KB on asked for into L2 as each 32 columns start (a row, then the next row: one stream per
  // thread; the core's prefetchers alone left generation from BF16 weights at ~2/3 of a plain read's
  // rate). The 1.1B shape, best of 5 interleaved, at a moment the VM read 55 GB/s: 4 / 8 / 16 KB
  // ahead 20.9 / 24.4 / 23.2 tokens/s.
  const auto* bytes = static_cast<const char*>(row);
  const int64_t size = static_cast<int64_t>(dtype_size(dtype));
  for (; j + 32 <= n; j += 32) {
    for (int64_t line = 0; line < size / 2; ++line) __builtin_prefetch(bytes + (j * size + 8192 + 64 * line), 0, 2);
    acc0 = _mm512_fmadd_ps(load16(dtype, row, j), _mm512_loadu_ps(x + j), acc0);
    acc1 = _mm512_fmadd_ps(load16(dtype, row, j + 16), _mm512_loadu_ps(x + j + 16), acc1);
  }
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  if (j < n) {
    float tail[32];
    convert_to_f32(dtype, static_cast<const uint8_t*>(row) + static_cast<size_t>(j) * dtype_size(dtype), n - j, tail);
    for (int64_t t = 0; t < n - j; ++t) sum += tail[t] * x[j + t];
  }
  return sum;
}
#pragma GCC diagnostic pop

using DotFn = float (*)(DType, const void*, const float*, int64_t);
DotFn best_dot() {
  static const DotFn fn = cpu_has_avx512() ? dot_avx512 : cpu_has_avx2_fma() ? dot_avx2 : dot_generic;
  return fn;
}

// One token: every output row is one dot product, rows split over the threads. A generated token is
// bound by reading the weights once, so nothing is converted or written but the sums.
void dense_matvec(const float* x, const Tensor& w, float* out) {
  const int64_t rows = w.rows(), cols = w.cols();
  const size_t stride = static_cast<size_t>(cols) * dtype_size(w.dtype);
  const auto* base = static_cast<const uint8_t*>(w.raw);
  const DotFn dot = best_dot();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) out[r] = dot(w.dtype, base + static_cast<size_t>(r) * stride, x, cols);
}

}  // namespace

void dense_matmul(const float* x, int64_t rows, const Tensor& w, float* out) {
  const int64_t n = w.rows(), k = w.cols();
  if (rows == 1) return dense_matvec(x, w, out);
  if (w.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(n), static_cast<int>(k),
                1.0f, x, static_cast<int>(k), w.data, static_cast<int>(k), 0.0f, out, static_cast<int>(n));
    return;
  }
  // Half-precision weights: converted a panel of rows at a time, never expanded whole.
  matmul_converted_rows(x, rows, n, k, [&](int64_t r0, int64_t r1, float* dst) { w.rows_to_f32(r0, r1, dst); }, out);
}

void linear(const float* x, int64_t rows, const Linear& l, float* out) {
  const int64_t n = l.out_features();
  if (l.packed != nullptr) {
    packed_matmul(x, rows, *l.packed, out);
  } else if (!l.input_scale.empty()) {
    // The original weights of a smoothed input: x·diag(scale) restores what they expect.
    const int64_t in = l.in_features();
    std::vector<float> scaled(static_cast<size_t>(rows * in));
#pragma omp parallel for schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < in; ++j) scaled[static_cast<size_t>(r * in + j)] = x[r * in + j] * l.input_scale[static_cast<size_t>(j)];
    dense_matmul(scaled.data(), rows, l.weight, out);
  } else {
    dense_matmul(x, rows, l.weight, out);
  }
  if (!l.bias.empty()) {
    const float* b = l.bias.data;
#pragma omp parallel for schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) out[r * n + j] += b[j];
  }
}

namespace {

// Rows [r0, r1) of one job on the calling thread.
void job_rows(const float* x, const MatvecJob& job, int64_t r0, int64_t r1, DotFn dot) {
  const Linear& l = *job.linear;
  // An adding job's rows go through a per-thread buffer the size of the output (grown once).
  thread_local std::vector<float> sum;
  if (job.add && sum.size() < static_cast<size_t>(l.out_features())) sum.resize(static_cast<size_t>(l.out_features()));
  float* out = job.add ? sum.data() : job.out;
  if (l.packed != nullptr) {
    packed_matvec_rows(x, *l.packed, r0, r1, out);
  } else {
    const int64_t cols = l.in_features();
    const size_t stride = static_cast<size_t>(cols) * dtype_size(l.weight.dtype);
    const auto* base = static_cast<const uint8_t*>(l.weight.raw);
    for (int64_t r = r0; r < r1; ++r) out[r] = dot(l.weight.dtype, base + static_cast<size_t>(r) * stride, x, cols);
  }
  if (!l.bias.empty())
    for (int64_t r = r0; r < r1; ++r) out[r] += l.bias.data[r];
  if (job.add)
    for (int64_t r = r0; r < r1; ++r) job.out[r] += out[r];
}

}  // namespace

void matvec_team(const float* x, std::initializer_list<MatvecJob> jobs) {
  // Tasks of 64 rows (whole 8-row tiles for packed weights) over every job, in job order.
  constexpr int64_t kRows = 64;
  struct Task {
    const MatvecJob* job;
    int64_t r0, r1;
  };
  Task tasks[2048];
  int64_t n = 0;
  for (const MatvecJob& job : jobs) {
    const int64_t rows = job.linear->out_features();
    for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
      if (n == 2048) {  // a huge layer (the head of a large vocabulary): its own static split
        n = -1;
        break;
      }
      tasks[n++] = {&job, r0, std::min(rows, r0 + kRows)};
    }
    if (n < 0) break;
  }
  const DotFn dot = best_dot();
  const SteadyInput steady(x);  // x is not written until every thread has left the loop below
  if (n >= 0) {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n; ++t) job_rows(x, *tasks[t].job, tasks[t].r0, tasks[t].r1, dot);
    return;
  }
  for (const MatvecJob& job : jobs) {
    const int64_t rows = job.linear->out_features(), chunks = (rows + kRows - 1) / kRows;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) job_rows(x, job, c * kRows, std::min(rows, (c + 1) * kRows), dot);
  }
}

void norm(NormKind kind, const float* x, const float* weight, const float* bias, int64_t rows, int64_t dim, float eps,
          float* out) {
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = out + r * dim;
    if (kind == NormKind::Layer) {
      float mean = 0.0f;
      for (int64_t i = 0; i < dim; ++i) mean += xr[i];
      mean /= static_cast<float>(dim);
      float var = 0.0f;
      for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      const float inv = 1.0f / std::sqrt(var / static_cast<float>(dim) + eps);
      for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * inv * weight[i] + (bias != nullptr ? bias[i] : 0.0f);
    } else {
      float ss = 0.0f;
      for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
      if (kind == NormKind::Rms)
        for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
      else
        for (int64_t i = 0; i < dim; ++i) yr[i] = (1.0f + weight[i]) * (xr[i] * inv);
    }
  }
}

namespace {

// e^x to ~2 ulp in operations that vectorize (ggml's softmax and SiLU make the same trade): x = n·ln2 + r
// with |r| ≤ ln2/2 (ln2 in two parts, so n·ln2_hi is exact), e^r by its Taylor polynomial to r⁶
// (truncation 1.2e-7), 2^n by the exponent bits. x is clamped to [−87.3, 88.3], where 2^n stays a
// normal float: e^x below 1e-38 (nothing in a softmax row or a SiLU gate) reads as about 1e-38, and
// above 2e38 (overflow) as 2e38.
inline float exp_fast(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  constexpr float kRound = 12582912.0f;  // 1.5 · 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504f + kRound) - kRound;
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f + r * (0.00833333377f + r * 0.00138888892f)))));
  return p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}

inline float apply(Activation act, float a) {
  switch (act) {
    case Activation::Silu: return a / (1.0f + exp_fast(-a));
    case Activation::Relu: return std::max(a, 0.0f);
    case Activation::Gelu: return 0.5f * a * (1.0f + std::erf(a * 0.70710678118654752f));
    case Activation::GeluTanh: {
      const float inner = 0.79788456080286536f * (a + 0.044715f * a * a * a);
      return 0.5f * a * (1.0f + std::tanh(inner));
    }
  }
  return a;
}

// g ← act(g)·u (or act(g) when u is null) over a run of values. SiLU gets loops of its own, where
// apply's switch folds away and exp_fast vectorizes (std::exp is a library call per value: a quarter
// of a calibration forward's time beside its products went to it); the other activations call libm.
BAQ_VECTOR_CLONES void activate_run(Activation act, float* __restrict g, const float* __restrict u, int64_t n) {
  const auto run = [&](auto f) {
    if (u != nullptr)
      for (int64_t i = 0; i < n; ++i) g[i] = f(g[i]) * u[i];
    else
      for (int64_t i = 0; i < n; ++i) g[i] = f(g[i]);
  };
  if (act == Activation::Silu)
    run([](float a) { return apply(Activation::Silu, a); });
  else
    run([act](float a) { return apply(act, a); });
}

constexpr int64_t kActivationRun = 4096;

void activate_all(Activation act, float* g, const float* u, int64_t n) {
  const int64_t runs = (n + kActivationRun - 1) / kActivationRun;
#pragma omp parallel for schedule(static) if (runs > 1)
  for (int64_t c = 0; c < runs; ++c) {
    const int64_t i0 = c * kActivationRun;
    activate_run(act, g + i0, u != nullptr ? u + i0 : nullptr, std::min(kActivationRun, n - i0));
  }
}

// One token's activations (a few thousand values): runs of 256, so every thread of the team has some.
void activate_all_team(Activation act, float* g, const float* u, int64_t n) {
  constexpr int64_t kTeamRun = 256;
  const int64_t runs = (n + kTeamRun - 1) / kTeamRun;
#pragma omp for schedule(static)
  for (int64_t c = 0; c < runs; ++c) {
    const int64_t i0 = c * kTeamRun;
    activate_run(act, g + i0, u != nullptr ? u + i0 : nullptr, std::min(kTeamRun, n - i0));
  }
}

// Softmax of a run of scores in place: the exponentials by exp_fast (vectorized) and summed in 16
// interleaved partial sums added in a fixed order (the same result on any machine and thread count).
BAQ_VECTOR_CLONES void softmax_run(float* v, int64_t n) {
  float mx = v[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, v[j]);
  constexpr int64_t kLanes = 16;
  float part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) {
      const float e = exp_fast(v[j + k] - mx);
      v[j + k] = e;
      part[k] += e;
    }
  for (; j < n; ++j) {
    v[j] = exp_fast(v[j] - mx);
    part[0] += v[j];
  }
  for (int64_t half = kLanes / 2; half > 0; half /= 2)
    for (int64_t k = 0; k < half; ++k) part[k] += part[k + half];
  const float inv = 1.0f / part[0];
  for (int64_t i = 0; i < n; ++i) v[i] *= inv;
}

}  // namespace

void activate(Activation act, float* x, int64_t n) { activate_all(act, x, nullptr, n); }

void gated(Activation act, float* g, const float* u, int64_t n) { activate_all(act, g, u, n); }

void activate_team(Activation act, float* x, int64_t n) { activate_all_team(act, x, nullptr, n); }

void matvec_gated_team(const float* x, const Linear& gate, const Linear& up, Activation act, float* g, float* u) {
  constexpr int64_t kRows = 64;
  const int64_t rows = gate.out_features(), chunks = (rows + kRows - 1) / kRows;
  const DotFn dot = best_dot();
  const SteadyInput steady(x);
  const MatvecJob gj{&gate, g}, uj{&up, u};
#pragma omp for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * kRows, r1 = std::min(rows, r0 + kRows);
    job_rows(x, gj, r0, r1, dot);
    job_rows(x, uj, r0, r1, dot);
    activate_run(act, g + r0, u + r0, r1 - r0);
  }
}

void gated_team(Activation act, float* g, const float* u, int64_t n) { activate_all_team(act, g, u, n); }

RopeTable::RopeTable(int max_pos, const std::vector<float>& frequencies)
    : head_size(static_cast<int>(frequencies.size()) * 2) {
  const size_t half = frequencies.size();
  cos.resize(static_cast<size_t>(max_pos) * half);
  sin.resize(cos.size());
  for (int p = 0; p < max_pos; ++p)
    for (size_t i = 0; i < half; ++i) {
      // F32 angles, as both llama2.c and transformers compute them.
      const float angle = static_cast<float>(p) * frequencies[i];
      cos[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
}

void rope(float* x, BatchShape shape, int n_heads, const RopeTable& table, RopeStyle style) {
  const int hd = table.head_size, half = hd / 2;
  const int64_t width = static_cast<int64_t>(n_heads) * hd;
#pragma omp parallel for schedule(static) if (shape.rows() > 1)
  for (int64_t r = 0; r < shape.rows(); ++r) {
    const int64_t pos = shape.start + r % shape.seqlen;
    const float* c = table.cos.data() + pos * half;
    const float* s = table.sin.data() + pos * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + r * width + static_cast<int64_t>(h) * hd;
      for (int i = 0; i < half; ++i) {
        float* a = style == RopeStyle::Interleaved ? v + 2 * i : v + i;
        float* b = style == RopeStyle::Interleaved ? v + 2 * i + 1 : v + i + half;
        const float x0 = *a, x1 = *b;
        *a = x0 * c[i] - x1 * s[i];
        *b = x0 * s[i] + x1 * c[i];
      }
    }
  }
}

KeysValues keys_values(const float* k, const float* v, BatchShape shape, int64_t kv_width, KvCache::Layer* cache) {
  if (cache == nullptr) return {k, v, shape.seqlen};
  const auto held = static_cast<size_t>(shape.start) * static_cast<size_t>(kv_width);
  const auto added = static_cast<size_t>(shape.rows() * kv_width);
  if (cache->k.size() < held) throw std::logic_error("KV cache shorter than its recorded length");
  cache->k.resize(held + added);
  cache->v.resize(held + added);
  std::copy(k, k + added, cache->k.begin() + static_cast<std::ptrdiff_t>(held));
  std::copy(v, v + added, cache->v.begin() + static_cast<std::ptrdiff_t>(held));
  return {cache->k.data(), cache->v.data(), shape.start + shape.seqlen};
}

void attention(const float* q, const KeysValues& kv, BatchShape shape, const AttentionShape& a, float* out) {
  constexpr int kQueryRun = 128;
  const int T = shape.seqlen, S = kv.kv_len, past = S - T, head_dim = a.head_size;
  const float *k = kv.k, *v = kv.v;
  const int group = a.n_heads / a.n_kv_heads;
  const int qw = a.n_heads * head_dim, kw = a.n_kv_heads * head_dim;
  const int jobs = shape.batch * a.n_heads;
  // Each (window, head) is one job with its own T×S score matrix; BLAS called inside an OpenMP
  // region runs on the calling thread (OpenBLAS's OpenMP flavour).
#pragma omp parallel
  {
    float* scores = Scratch::get(0, static_cast<size_t>(T) * S);
#pragma omp for schedule(dynamic, 1)
    for (int job = 0; job < jobs; ++job) {
      const int b = job / a.n_heads, h = job % a.n_heads, kvh = h / group;
      const int64_t qrow0 = static_cast<int64_t>(b) * T, krow0 = static_cast<int64_t>(b) * S;
      const float* qb = q + qrow0 * qw + static_cast<int64_t>(h) * head_dim;
      const float* kb = k + krow0 * kw + static_cast<int64_t>(kvh) * head_dim;
      const float* vb = v + krow0 * kw + static_cast<int64_t>(kvh) * head_dim;
      float* ob = out + qrow0 * qw + static_cast<int64_t>(h) * head_dim;
      // Queries in runs of kQueryRun: a run's last query sees keys up to past + i1, so the keys past
      // that are neither scored nor summed (the full T × S products computed the causal mask's
      // zeros too: nearly half the work on a calibration window).
      for (int i0 = 0; i0 < T; i0 += kQueryRun) {
        const int i1 = std::min(T, i0 + kQueryRun), n = i1 - i0, keys = past + i1;
        float* run = scores + static_cast<int64_t>(i0) * S;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, keys, head_dim, a.scale, qb + static_cast<int64_t>(i0) * qw, qw,
                    kb, kw, 0.0f, run, S);
        for (int i = i0; i < i1; ++i) {
          float* row = scores + static_cast<int64_t>(i) * S;
          const int last = past + i;  // causal: the query at position past+i sees keys up to itself
          const int first = a.window > 0 ? std::max(0, last - a.window + 1) : 0;
          if (a.softcap > 0.0f)
            for (int j = first; j <= last; ++j) row[j] = a.softcap * std::tanh(row[j] / a.softcap);
          softmax_run(row + first, last - first + 1);
          for (int j = 0; j < first; ++j) row[j] = 0.0f;
          for (int j = last + 1; j < keys; ++j) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, head_dim, keys, 1.0f, run, S, vb, kw, 0.0f,
                    ob + static_cast<int64_t>(i0) * qw, qw);
      }
    }
  }
}

namespace {

// One head's scores q·k_j (scaled, soft-capped) and its weighted sum of values, for keys and values
// strided `kw` apart. The AVX-512 versions (head sizes a multiple of 16) keep every sum in registers:
// a call through the dtype-generic dot per key cost more than its 32 products.
void head_scores_generic(const float* qh, const float* kh, int64_t kw, int hd, int first, int S, float* scores) {
  for (int j = first; j < S; ++j) {
    const float* kj = kh + static_cast<int64_t>(j) * kw;
    float dot = 0.0f;
    for (int i = 0; i < hd; ++i) dot += kj[i] * qh[i];
    scores[j] = dot;
  }
}

void head_values_generic(const float* scores, const float* vh, int64_t kw, int hd, int first, int S, float* oh) {
  for (int i = 0; i < hd; ++i) oh[i] = 0.0f;
  for (int j = first; j < S; ++j)
    for (int i = 0; i < hd; ++i) oh[i] += scores[j] * vh[static_cast<int64_t>(j) * kw + i];
}

#pragma GCC diagnostic push  // GCC 12's _mm512_reduce_add_ps: see dot_avx512
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) void head_scores_avx512(const float* qh, const float* kh, int64_t kw, int hd, int first,
                                                           int S, float* scores) {
  for (int j = first; j < S; ++j) {
    const float* kj = kh + static_cast<int64_t>(j) * kw;
    __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(kj), _mm512_loadu_ps(qh));
    for (int i = 16; i < hd; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(kj + i), _mm512_loadu_ps(qh + i), acc);
    scores[j] = _mm512_reduce_add_ps(acc);
  }
}
#pragma GCC diagnostic pop

__attribute__((target("avx512f"))) void head_values_avx512(const float* scores, const float* vh, int64_t kw, int hd, int first,
                                                           int S, float* oh) {
  for (int i0 = 0; i0 < hd; i0 += 64) {  // up to four registers of outputs over every position
    const int n = std::min(4, (hd - i0) / 16);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int j = first; j < S; ++j) {
      const __m512 p = _mm512_set1_ps(scores[j]);
      const float* vj = vh + static_cast<int64_t>(j) * kw + i0;
      for (int r = 0; r < n; ++r) acc[r] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vj + 16 * r), acc[r]);
    }
    for (int r = 0; r < n; ++r) _mm512_storeu_ps(oh + i0 + 16 * r, acc[r]);
  }
}

}  // namespace

void attention_team(const float* q, const KeysValues& kv, const AttentionShape& a, float* out) {
  const int S = kv.kv_len, hd = a.head_size, group = a.n_heads / a.n_kv_heads;
  const int kw = a.n_kv_heads * hd;
  const int first = a.window > 0 ? std::max(0, S - a.window) : 0;
  const bool wide = cpu_has_avx512() && hd % 16 == 0;
#pragma omp for schedule(static)
  for (int h = 0; h < a.n_heads; ++h) {
    float* scores = Scratch::get(0, static_cast<size_t>(S));
    const float* qh = q + static_cast<int64_t>(h) * hd;
    const int64_t kv_at = static_cast<int64_t>(h / group) * hd;
    if (wide) head_scores_avx512(qh, kv.k + kv_at, kw, hd, first, S, scores);
    else head_scores_generic(qh, kv.k + kv_at, kw, hd, first, S, scores);
    for (int j = first; j < S; ++j) {
      float dot = scores[j] * a.scale;
      if (a.softcap > 0.0f) dot = a.softcap * std::tanh(dot / a.softcap);
      scores[j] = dot;
    }
    softmax_run(scores + first, S - first);
    float* oh = out + static_cast<int64_t>(h) * hd;
    if (wide) head_values_avx512(scores, kv.v + kv_at, kw, hd, first, S, oh);
    else head_values_generic(scores, kv.v + kv_at, kw, hd, first, S, oh);
  }
}

}  // namespace baq::kernels
