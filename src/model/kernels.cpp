#include "model/kernels.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace baq::kernels {

float* Scratch::get(int slot, size_t n) {
  thread_local std::vector<std::vector<float>> buffers;
  if (buffers.size() <= static_cast<size_t>(slot)) buffers.resize(static_cast<size_t>(slot) + 1);
  auto& b = buffers[static_cast<size_t>(slot)];
  if (b.size() < n) b.resize(n);
  return b.data();
}

void linear(const float* x, int64_t rows, const Linear& l, float* out) {
  const int64_t n = l.out_features(), k = l.in_features();
  if (l.packed != nullptr)
    packed_matmul(x, rows, *l.packed, out);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(n),
              static_cast<int>(k), 1.0f, x, static_cast<int>(k), l.weight.data, static_cast<int>(k), 0.0f, out,
              static_cast<int>(n));
  if (!l.bias.empty()) {
    const float* b = l.bias.data;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) out[r * n + j] += b[j];
  }
}

void rmsnorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float ss = 0.0f;
    for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = weight[i] * (xr[i] * inv);
  }
}

void layernorm(const float* x, const float* weight, const float* bias, int64_t rows, int64_t dim, float eps,
               float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float mean = 0.0f;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= static_cast<float>(dim);
    float var = 0.0f;
    for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const float inv = 1.0f / std::sqrt(var / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = (xr[i] - mean) * inv * weight[i] + bias[i];
  }
}

RopeTable::RopeTable(int max_pos, int hd, float theta) : head_dim(hd) {
  const int half = hd / 2;
  cos.resize(static_cast<size_t>(max_pos) * half);
  sin.resize(cos.size());
  for (int p = 0; p < max_pos; ++p)
    for (int i = 0; i < half; ++i) {
      // F32 frequencies and angles, as both llama2.c and transformers compute them.
      const float freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(hd));
      const float angle = static_cast<float>(p) * freq;
      cos[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
}

void rope(float* x, BatchShape shape, int n_heads, const RopeTable& table, RopeStyle style) {
  const int hd = table.head_dim, half = hd / 2;
  const int64_t width = static_cast<int64_t>(n_heads) * hd;
#pragma omp parallel for schedule(static)
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

void attention(const float* q, const KeysValues& kv, BatchShape shape, int n_heads, int n_kv_heads, int head_dim,
               float scale, float* out) {
  const int T = shape.seqlen, S = kv.kv_len, past = S - T;
  const float *k = kv.k, *v = kv.v;
  const int group = n_heads / n_kv_heads;
  const int qw = n_heads * head_dim, kw = n_kv_heads * head_dim;
  const int jobs = shape.batch * n_heads;
  // Each (window, head) is one job with its own T×T score matrix; BLAS runs single-threaded inside
  // so the OpenMP threads do not oversubscribe the cores.
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel
  {
    float* scores = Scratch::get(0, static_cast<size_t>(T) * S);
#pragma omp for schedule(dynamic, 1)
    for (int job = 0; job < jobs; ++job) {
      const int b = job / n_heads, h = job % n_heads, kvh = h / group;
      const int64_t qrow0 = static_cast<int64_t>(b) * T, krow0 = static_cast<int64_t>(b) * S;
      const float* qb = q + qrow0 * qw + static_cast<int64_t>(h) * head_dim;
      const float* kb = k + krow0 * kw + static_cast<int64_t>(kvh) * head_dim;
      const float* vb = v + krow0 * kw + static_cast<int64_t>(kvh) * head_dim;
      float* ob = out + qrow0 * qw + static_cast<int64_t>(h) * head_dim;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, S, head_dim, scale, qb, qw, kb, kw, 0.0f,
                  scores, S);
      for (int i = 0; i < T; ++i) {
        float* row = scores + static_cast<int64_t>(i) * S;
        const int last = past + i;  // causal: the query at position past+i sees keys up to itself
        float mx = row[0];
        for (int j = 1; j <= last; ++j) mx = std::max(mx, row[j]);
        float sum = 0.0f;
        for (int j = 0; j <= last; ++j) {
          row[j] = std::exp(row[j] - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j <= last; ++j) row[j] *= inv;
        for (int j = last + 1; j < S; ++j) row[j] = 0.0f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, head_dim, S, 1.0f, scores, S, vb, kw, 0.0f,
                  ob, qw);
    }
  }
  openblas_set_num_threads(blas_threads);
}

}  // namespace baq::kernels
