#pragma once
// The forward pass's numerical kernels: F32, OpenBLAS sgemm for every matmul, OpenMP for the rest.
#include <cstdint>
#include <vector>

#include "baq/model.hpp"

namespace baq::kernels {

// Reusable per-thread buffers for the forward pass: a block's activations for thousands of rows are
// megabytes, and allocating them afresh per block costs a page fault per 4 KiB (seen as system time).
class Scratch {
 public:
  // A buffer of at least `n` floats for `slot`, valid until the next call with the same slot.
  static float* get(int slot, size_t n);
};

// out (rows × out_features) = x (rows × in) · Wᵀ + bias
void linear(const float* x, int64_t rows, const Linear& l, float* out);
void rmsnorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);
void layernorm(const float* x, const float* weight, const float* bias, int64_t rows, int64_t dim, float eps,
               float* out);

struct RopeTable {
  int head_dim = 0;
  std::vector<float> cos, sin;  // [pos][head_dim/2]
  RopeTable() = default;
  RopeTable(int max_pos, int head_dim, float theta);
};
// Rotates every head of `x` ((batch·seqlen) × n_heads·head_dim) by its position (shape.start + row in window).
void rope(float* x, BatchShape shape, int n_heads, const RopeTable& table, RopeStyle style);

// Keys and values attention reads: this step's own rows, or (with a cache) the cache after
// appending them. `kv_len` rows per window.
struct KeysValues {
  const float* k;
  const float* v;
  int kv_len;
};
KeysValues keys_values(const float* k, const float* v, BatchShape shape, int64_t kv_width, KvCache::Layer* cache);

// Causal multi-head attention with grouped KV heads: the seqlen queries of each window are its last
// positions, query i sees keys 0..kv.kv_len - seqlen + i. Scores scaled by `scale`.
void attention(const float* q, const KeysValues& kv, BatchShape shape, int n_heads, int n_kv_heads, int head_dim,
               float scale, float* out);

}  // namespace baq::kernels
