#pragma once
// The forward pass's numerical kernels: F32 activations, weights in their stored dtype (F32, F16,
// BF16 or packed) converted a panel of rows at a time inside the product, OpenBLAS sgemm for every batched
// matmul, fused dot products for one row, OpenMP for the rest.
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
  // Frees every thread's buffers (called between blocks when they are large).
  static void release();
};

// out (rows × out_features) = x (rows × in) · Wᵀ + bias, whatever W's storage.
void linear(const float* x, int64_t rows, const Linear& l, float* out);

// One token (the generation step): y = W·x + bias for each job, all their output rows shared among
// the threads of the enclosing OpenMP parallel region in one worksharing loop (a barrier at its end);
// called outside a region it runs on the calling thread. One region per token instead of one per
// operation is what keeps per-token overhead below the cost of reading the weights.
struct MatvecJob {
  const Linear* linear;
  float* out;
  bool add = false;  // out += W·x + bias (a residual added in place: no serial step and barrier after)
};
void matvec_team(const float* x, std::initializer_list<MatvecJob> jobs);
// The same for a dense weight tensor of any dtype (no bias).
void dense_matmul(const float* x, int64_t rows, const Tensor& w, float* out);

// y = norm(x) over `dim` per row, for the three norm kinds (bias only for LayerNorm; may be null).
void norm(NormKind kind, const float* x, const float* weight, const float* bias, int64_t rows, int64_t dim, float eps,
          float* out);
// In place: x = act(x) (no gate), or g = act(g)·u.
void activate(Activation act, float* x, int64_t n);
void gated(Activation act, float* g, const float* u, int64_t n);
// The same shared by the threads of the enclosing parallel region (one token: a worksharing loop
// and its barrier, where a `single` would leave the other threads waiting).
void activate_team(Activation act, float* x, int64_t n);
void gated_team(Activation act, float* g, const float* u, int64_t n);
// g = act(gate·x) ⊙ (up·x) in one worksharing loop: each task takes the same rows of both and gates
// them at once (one barrier where matvec_team and gated_team take two).
void matvec_gated_team(const float* x, const Linear& gate, const Linear& up, Activation act, float* g, float* u);

struct RopeTable {
  int head_size = 0;
  std::vector<float> cos, sin;  // [pos][head_size/2]
  RopeTable() = default;
  RopeTable(int max_pos, const std::vector<float>& frequencies);
};
// Rotates every head of `x` ((batch·seqlen) × n_heads·head_size) by its position (shape.start + row in window).
void rope(float* x, BatchShape shape, int n_heads, const RopeTable& table, RopeStyle style);

// Keys and values attention reads: this step's own rows, or (with a cache) the cache after
// appending them. `kv_len` rows per window.
struct KeysValues {
  const float* k;
  const float* v;
  int kv_len;
};
KeysValues keys_values(const float* k, const float* v, BatchShape shape, int64_t kv_width, KvCache::Layer* cache);

struct AttentionShape {
  int n_heads, n_kv_heads, head_size;
  float scale;    // applied to q·k
  float softcap;  // 0: none, else cap·tanh(score/cap)
  int window;     // 0: causal over every earlier key; else the last `window` keys (itself included)
};
// Causal multi-head attention with grouped KV heads: the seqlen queries of each window are its last
// positions, query i sees keys 0..kv.kv_len − seqlen + i (and only the last `window` of them).
void attention(const float* q, const KeysValues& kv, BatchShape shape, const AttentionShape& a, float* out);
// The same for one query (the last of kv.kv_len positions), heads shared among the threads of the
// enclosing parallel region (a worksharing loop with a barrier at its end).
void attention_team(const float* q, const KeysValues& kv, const AttentionShape& a, float* out);

}  // namespace baq::kernels
