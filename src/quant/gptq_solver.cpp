#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>

#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/quant.hpp"
#include "baq/tensor.hpp"
#include "model/cpu_features.hpp"
#include "quant/clip_error.hpp"
#include "quant/hessian_factor.hpp"

namespace baq {

namespace {

// Rows per chunk of the column loop: a column's chunk is four AVX2 (two AVX-512) vectors, so the
// updates a column gathers stay in registers while the block's earlier columns stream past them.
constexpr int64_t kRowChunk = 32;

// One block [i1, i2) of GPTQ's columns in visiting order, as the chunked column loop sees it (see
// HessianFactor for the update rule): the original weights, column-major, each column overwritten
// by its differences d = w − q once quantized; the block's factor transposed (pt[(j − i1)·B + i − i1]
// = P_ij for i < j, B = i2 − i1: the column of P a later column reads, contiguous); the updates
// Δ = w' − w the columns have gathered so far (column-major, column i1 at `delta`); and where codes
// and values go (row-major, original column order).
struct BlockColumns {
  float* wt;
  int64_t rows, cols;
  const float* p;
  const float* pt;
  int64_t i1, i2;
  float* delta;
  double* loss;  // Σ e² of each chunk (row r0 / kRowChunk) and block column, at chunk·(i2 − i1) + i − i1
  const int64_t* perm;
  bool natural_order;  // perm is the identity
  uint8_t* codes;
  float* dequant;
};

// Column i's differences d (all rows) spread over the block's later columns j < i2: Δ_j −= P_ij·d
// (column j of Δ at delta_first + (j − first)·stride). Only a one-level column takes this path.
BAQ_VECTOR_CLONES void spread_error(const BlockColumns& b, int64_t i, const float* d, int64_t n, float* delta_first,
                                    int64_t first, int64_t stride) {
  for (int64_t j = i + 1; j < b.i2; ++j) {
    const float pij = b.p[i * b.cols + j];
    float* dj = delta_first + (j - first) * stride;
    for (int64_t k = 0; k < n; ++k) dj[k] -= pij * d[k];
  }
}

// What columns [a, j) of a chunk add to column j's update: acc −= P_ij·d_i in increasing i, the
// order (and the separate multiply and subtract) of spreading each column's error as it is
// quantized, so the values are those of the right-looking update — but the 32 sums stay in registers
// where that stored and reloaded them once per pair of columns.
BAQ_VECTOR_CLONES void gather_updates(float* __restrict acc, const float* __restrict pt_j, const float* __restrict d,
                                      int64_t count) {
  float sum[kRowChunk];
  for (int64_t k = 0; k < kRowChunk; ++k) sum[k] = acc[k];
  for (int64_t i = 0; i < count; ++i) {
    const float pij = pt_j[i];
    for (int64_t k = 0; k < kRowChunk; ++k) sum[k] -= pij * d[i * kRowChunk + k];
  }
  for (int64_t k = 0; k < kRowChunk; ++k) acc[k] = sum[k];
}

// A column's chunk of nr ≤ kRowChunk rows: a whole chunk as a fixed-size copy the compiler inlines
// (a library call per column of 32 values cost more than the copy).
inline void copy_rows(float* __restrict to, const float* __restrict from, int64_t nr) {
  if (nr == kRowChunk)
    std::memcpy(to, from, kRowChunk * sizeof(float));
  else
    std::memcpy(to, from, static_cast<size_t>(nr) * sizeof(float));
}

// One column of a chunk, w' = w + Δ, on each row's grid (scale, zero, maxq): codes, values, the
// differences w − q and the errors (w' − q)·R_ii (rows past the chunk's end are padding: zero
// weights on a unit grid).
BAQ_VECTOR_CLONES void quantize_column(const float* __restrict scale, const float* __restrict zero, int maxq,
                                       const float* __restrict w, const float* __restrict delta, float r,
                                       float* __restrict code, float* __restrict value, float* __restrict diff,
                                       float* __restrict e) {
  for (int64_t k = 0; k < kRowChunk; ++k) {
    const float col = w[k] + delta[k];
    const float c = GridParams{scale[k], zero[k], maxq}.code_value(col);
    const float q = scale[k] * (c - zero[k]);
    code[k] = c;
    value[k] = q;
    diff[k] = w[k] - q;
    e[k] = (col - q) * r;
  }
}

// Columns [a, c) of the block, rows [r0, r1) (at most kRowChunk): each quantized on its row's grid
// (`grids` gives column i's scale and zero per row and its maxq) after gathering what the chunk's
// earlier columns add to it; then what they add to the block's later columns [c, i2). The chunk's
// columns are worked on in contiguous copies padded to kRowChunk rows: in place, the columns lie
// `rows` floats apart, and with rows a multiple of 1024 every column's chunk falls in the same few
// L1 sets (and on its own page).
BAQ_VECTOR_CLONES void quantize_columns(const BlockColumns& b, int64_t a, int64_t c, int64_t r0, int64_t r1,
                                        const std::function<void(int64_t i, float* scale, float* zero, int& maxq)>& grids) {
  const int64_t nr = r1 - r0, n = b.i2 - a, B = b.i2 - b.i1;
  thread_local std::vector<float> work;
  work.resize(static_cast<size_t>(6 * n * kRowChunk));
  if (nr < kRowChunk) std::fill(work.begin(), work.begin() + 2 * n * kRowChunk, 0.0f);  // padding rows of Δ and w
  float* dl = work.data();                        // updates of columns [a, i2), kRowChunk apart
  float* w = dl + n * kRowChunk;                  // weights of columns [a, c)
  float* diff = w + n * kRowChunk;                // their differences, errors, codes and values
  float* e = diff + n * kRowChunk;
  float* code = e + n * kRowChunk;
  float* value = code + n * kRowChunk;
  for (int64_t j = 0; j < n; ++j) copy_rows(dl + j * kRowChunk, b.delta + (a - b.i1 + j) * b.rows + r0, nr);
  for (int64_t j = 0; j < c - a; ++j) copy_rows(w + j * kRowChunk, b.wt + (a + j) * b.rows + r0, nr);
  float scale[kRowChunk], zero[kRowChunk];
  std::fill(scale, scale + kRowChunk, 1.0f);
  std::fill(zero, zero + kRowChunk, 0.0f);
  int maxq = 0;
  for (int64_t i = a; i < c; ++i) {
    grids(i, scale, zero, maxq);
    const int64_t at = (i - a) * kRowChunk;
    gather_updates(dl + at, b.pt + (i - b.i1) * B + (a - b.i1), diff, i - a);
    quantize_column(scale, zero, maxq, w + at, dl + at, b.p[i * b.cols + i], code + at, value + at, diff + at, e + at);
    // Σ e² over the chunk's rows by halving (vectorizes; a fixed order, whatever the thread count).
    float sq[kRowChunk];
    for (int64_t k = 0; k < kRowChunk; ++k) sq[k] = e[at + k] * e[at + k];
    for (int64_t half = kRowChunk / 2; half > 0; half /= 2)
      for (int64_t k = 0; k < half; ++k) sq[k] += sq[k + half];
    b.loss[(r0 / kRowChunk) * (b.i2 - b.i1) + i - b.i1] = sq[0];
  }
  for (int64_t j = c; j < b.i2; ++j) {
    float* dj = dl + (j - a) * kRowChunk;
    gather_updates(dj, b.pt + (j - b.i1) * B + (a - b.i1), diff, c - a);
    copy_rows(b.delta + (j - b.i1) * b.rows + r0, dj, nr);
  }
  for (int64_t i = a; i < c; ++i) copy_rows(b.wt + i * b.rows + r0, diff + (i - a) * kRowChunk, nr);
  // Codes and values into their rows. In the natural order a chunk's columns are a run of each row:
  // OpenBLAS's transpose writes them (an element-wise loop here read one value per 128 bytes and took
  // a quarter of this function), the codes through a row-major copy narrowed to bytes a row at a time.
  const int64_t m = c - a;
  if (b.natural_order) {
    cblas_somatcopy(CblasRowMajor, CblasTrans, static_cast<int>(m), static_cast<int>(nr), 1.0f, value, static_cast<int>(kRowChunk),
                    b.dequant + r0 * b.cols + a, static_cast<int>(b.cols));
    float* rowwise = w;  // the weights' copy is no longer needed
    cblas_somatcopy(CblasRowMajor, CblasTrans, static_cast<int>(m), static_cast<int>(nr), 1.0f, code, static_cast<int>(kRowChunk),
                    rowwise, static_cast<int>(m));
    for (int64_t k = 0; k < nr; ++k) {
      uint8_t* to = b.codes + (r0 + k) * b.cols + a;
      for (int64_t i = 0; i < m; ++i) to[i] = static_cast<uint8_t>(rowwise[k * m + i]);
    }
    return;
  }
  for (int64_t k = 0; k < nr; ++k)
    for (int64_t i = a; i < c; ++i) {
      const size_t at = static_cast<size_t>((r0 + k) * b.cols + b.perm[i]);
      b.codes[at] = static_cast<uint8_t>(code[(i - a) * kRowChunk + k]);
      b.dequant[at] = value[(i - a) * kRowChunk + k];
    }
}

}  // namespace

QuantizedMatrix quantize_gptq(const float* w, int64_t rows, int64_t cols, const double* h, const QuantSettings& s,
                              const std::string& name, const std::vector<int>* levels) {
  if (s.bits < 1 || s.bits > 8) fail("{}: bits {} outside 1..8", name, s.bits);
  if (levels != nullptr) {
    if (static_cast<int64_t>(levels->size()) != cols) fail("{}: {} level counts for {} columns", name, levels->size(), cols);
    for (int L : *levels)
      if (L < 1 || L > 256) fail("{}: level count {} outside 1..256", name, L);
  }
  if (s.block_size < 1) fail("{}: block size must be positive", name);
  if (const int64_t i = first_non_finite(w, rows * cols); i >= 0)
    fail("{}: weight holds a non-finite value at ({}, {})", name, i / cols, i % cols);
  if (first_non_finite(h, cols * cols) >= 0)
    fail("{}: Hessian holds a non-finite value (NaN/Inf in the calibration activations?)", name);

  // Column order: natural, or by decreasing Hessian diagonal (act-order).
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  if (s.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return h[a * cols + a] > h[b * cols + b]; });

  // The permuted Hessian with dead inputs (zero diagonal) made harmless is written straight into the
  // factor's buffer (the caller's H stays untouched, for retries and the proxy loss); Wᵀ so a column is
  // contiguous.
  std::vector<char> dead(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) dead[i] = h[perm[i] * cols + perm[i]] == 0.0;
  // Not zeroed: the transpose below writes every value (zeroing 46 MB first took the other threads' time).
  const std::unique_ptr<float[]> wt_values = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(cols * rows));
  float* const wt = wt_values.get();
  // OpenBLAS's blocked transpose: a column of W read whole would touch a cache line per row, and a
  // tiled loop of ours ran at a sixth of its speed (5632 × 2048: 39 against 7 ms).
  cblas_somatcopy(CblasRowMajor, CblasTrans, static_cast<int>(rows), static_cast<int>(cols), 1.0f, w, static_cast<int>(cols),
                  wt, static_cast<int>(rows));
  if (s.act_order) {  // row i of Wᵀ becomes input perm[i]: the permutation's cycles, one row in hand
    std::vector<float> held(static_cast<size_t>(rows));
    std::vector<char> placed(static_cast<size_t>(cols), 0);
    for (int64_t start = 0; start < cols; ++start) {
      if (placed[start] || perm[start] == start) continue;
      std::copy_n(wt + start * rows, rows, held.begin());
      int64_t i = start;
      for (; perm[i] != start; i = perm[i]) {
        std::copy_n(wt + perm[i] * rows, rows, wt + i * rows);
        placed[i] = 1;
      }
      std::copy_n(held.begin(), rows, wt + i * rows);
      placed[i] = 1;
    }
  }
  for (int64_t i = 0; i < cols; ++i)
    if (dead[i]) std::fill(wt + i * rows, wt + (i + 1) * rows, 0.0f);
  const auto fill = [&](float* hp) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) hp[i * cols + j] = static_cast<float>(h[perm[i] * cols + perm[j]]);
      if (dead[i]) hp[i * cols + i] = 1.0f;
    }
  };
  // BAQ's order-invariant coefficients weigh each column by 1/[H⁻¹]_jj; nothing else needs the inverse.
  const bool column_weights = levels != nullptr && s.baq_order_invariant;
  const std::shared_ptr<const HessianFactor> factor =
      shared_hessian_factor(h, cols, perm, fill, s.damp, s.max_damp_retries, name, column_weights);
  const HessianFactor& f = *factor;
  const float* p = f.p.data();

  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.damp = f.damp;
  m.damp_retries = f.retries;
  const int64_t gs = s.group_size > 0 ? s.group_size : cols;
  m.n_groups = static_cast<int>((cols + gs - 1) / gs);
  m.sym = s.sym;
  m.lo.resize(static_cast<size_t>(rows * m.n_groups));
  m.hi.resize(m.lo.size());
  m.ranges = s.ranges;
  m.super_groups = s.ranges == RangeKind::Scaled8 ? std::clamp(s.super_groups, 1, m.n_groups) : 1;  // at most one superblock of groups
  const int n_super = (m.n_groups + m.super_groups - 1) / m.super_groups;
  if (s.ranges == RangeKind::Scaled8) {
    m.super_lo.resize(static_cast<size_t>(rows * n_super));
    m.super_hi.resize(m.super_lo.size());
    m.qlo.resize(m.lo.size());
    m.qhi.resize(m.lo.size());
  }
  m.levels = levels != nullptr ? *levels : std::vector<int>(static_cast<size_t>(cols), 1 << s.bits);
  m.column_mean.assign(static_cast<size_t>(cols), 0.0f);
  m.group_of.resize(static_cast<size_t>(cols));
  m.codes.resize(static_cast<size_t>(rows * cols));
  m.dequant.resize(m.codes.size());
  m.column_loss.assign(static_cast<size_t>(cols), 0.0);
  m.column_sq_error.assign(static_cast<size_t>(cols), 0.0);
  m.column_weight.assign(static_cast<size_t>(cols), 0.0);
  if (column_weights) {
    const std::vector<double>& hinv = f.inverse_diagonal;
    for (int64_t i = 0; i < cols; ++i) m.column_weight[perm[i]] = hinv[i] > 0 ? 1.0 / hinv[i] : 0.0;
  }

  // Blocks never straddle a group start, so a group's grid is always fitted on fully updated columns
  // and the result does not depend on the block size (beyond rounding).
  //
  // The updates go in panels of several blocks [p1, p2): at a panel's start, one GEMM gathers what
  // every earlier column's differences add to its columns (Δ = −D·P, deep: all p1 earlier columns);
  // within it, each block's differences update the rest of the panel. Columns past the panel are
  // not touched until their own panel, so a fit inside a panel must not read past it (nor a fit at
  // its start, but the first: there nothing has been quantized yet) — a group's or a Scaled8
  // superblock's columns. Δ is at most 4 blocks (512 columns) × rows and 32 MB, unless a fit needs more.
  const int64_t block = std::min<int64_t>(s.block_size, cols);
  constexpr int64_t kPanelBlocks = 4, kPanelBytes = int64_t{32} << 20;
  const int64_t panel_width = std::max(block, std::min(kPanelBlocks * block, kPanelBytes / (4 * rows) / block * block));
  // Columns a fit at column i reads (i at a group start): its group, or a Scaled8 superblock's groups.
  const auto fit_reads_to = [&](int64_t i) {
    const bool new_super = s.ranges == RangeKind::Scaled8 && (i / gs) % m.super_groups == 0;
    return std::min(cols, i + gs * (new_super ? m.super_groups : 1));
  };
  const auto panel_end = [&](int64_t p1) {
    int64_t p2 = std::min(cols, p1 + panel_width);
    if (p1 > 0 && p1 % gs == 0) p2 = std::max(p2, fit_reads_to(p1));
    for (int64_t i = (p1 / gs + 1) * gs; i < p2; i += gs)
      if (fit_reads_to(i) > p2) return i;
    return p2;
  };
  std::vector<float> delta, pt(static_cast<size_t>(block * block));
  std::vector<double> chunk_loss(static_cast<size_t>((rows + kRowChunk - 1) / kRowChunk * block)), mean_loss(static_cast<size_t>(block));
  for (int64_t i1 = 0, p1 = 0, p2 = 0; i1 < cols;) {
    if (i1 == p2) {  // a panel starts: its columns' updates from every earlier column
      p1 = p2;
      p2 = panel_end(p1);
      delta.resize(std::max(delta.size(), static_cast<size_t>((p2 - p1) * rows)));
      if (p1 == 0)
        std::fill(delta.begin(), delta.begin() + (p2 - p1) * rows, 0.0f);
      else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(p2 - p1), static_cast<int>(rows),
                    static_cast<int>(p1), -1.0f, p + p1, static_cast<int>(cols), wt, static_cast<int>(rows), 0.0f,
                    delta.data(), static_cast<int>(rows));
    }
    const int64_t group_end = (i1 / gs + 1) * gs;
    const int64_t i2 = std::min({i1 + block, group_end, p2});
    float* block_delta = delta.data() + (i1 - p1) * rows;  // Δ of column i1; the panel's later columns follow
    if (i1 % gs == 0) {
      const int64_t g = i1 / gs, c1 = std::min(cols, i1 + gs);
      // Scaled8: a superblock's bounds are measured when the loop reaches it (later columns keep moving
      // as this one's errors spread; a group that outgrows them is clipped to them).
      const bool new_super = s.ranges == RangeKind::Scaled8 && g % m.super_groups == 0;
      const int64_t s1 = std::min(cols, i1 + gs * m.super_groups);
      // Rows go in tiles of 64, each row's values of the group contiguous for the range search, which
      // reads them nine times. The column-major weights and updates are transposed into a tile by
      // OpenBLAS's somatcopy: an element-wise copy (a column's rows read, stored a tile row apart)
      // waited on memory for most of its time and was 5–14 % of a 5632 × 2048 solve.
      constexpr int64_t kTile = 64;
      std::vector<float> tile, weights;
      // The group's one level count when its columns share it (every group of uniform GPTQ), else 0.
      int group_levels = m.levels[perm[i1]];
      for (int64_t c = i1; c < c1; ++c)
        if (m.levels[perm[c]] != group_levels) group_levels = 0;
#pragma omp parallel for schedule(static) firstprivate(tile, weights)
      for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
        const int64_t nr = std::min(kTile, rows - r0), n = c1 - i1, nt = (new_super ? s1 : c1) - i1;
        tile.resize(static_cast<size_t>(kTile * nt));
        const auto transposed = [&](const float* columns, float* to) {  // rows [r0, r0 + nr) of nt columns
          cblas_somatcopy(CblasRowMajor, CblasTrans, static_cast<int>(nt), static_cast<int>(nr), 1.0f, columns + r0,
                          static_cast<int>(rows), to, static_cast<int>(nt));
        };
        // GPTQ fits on its columns as updated by every earlier column's error: w_j − Σ_{k<i1} e_k·U_kj.
        // That is not w + Δ (the P form's partial sums differ; only a column's full sum, when it is
        // quantized, is the same): it is w + X with X_j = Δ_j + Σ_{i1≤m<j} X_m·P_mj (with U = R⁻¹ in
        // blocks, Σ_{k<i1} e_k·U_kj = −(D·R[<i1, i1:])·R[i1:, i1:]⁻¹ restricted to the fitted columns).
        // Before the first column nothing has been quantized: X = 0, and past the first panel too.
        if (i1 > 0) {
          transposed(delta.data() + (i1 - p1) * rows, tile.data());
          for (int64_t rr = 0; rr < nr; ++rr) {
            float* x = tile.data() + rr * nt;
            for (int64_t m1 = 0; m1 + 1 < nt; ++m1) {
              const float xm = x[m1];
              const float* pm = p + (i1 + m1) * cols + i1;
              for (int64_t j = m1 + 1; j < nt; ++j) x[j] += xm * pm[j];
            }
          }
          weights.resize(tile.size());
          transposed(wt + i1 * rows, weights.data());
          for (int64_t k = 0; k < nr * nt; ++k) tile[static_cast<size_t>(k)] += weights[static_cast<size_t>(k)];
        } else {
          transposed(wt, tile.data());
        }
        for (int64_t r = r0; r < r0 + nr; ++r) {
          const float* group_values = tile.data() + (r - r0) * nt;
          const size_t sk = static_cast<size_t>(r * n_super + g / m.super_groups);
          if (new_super) {
            float smin = group_values[0], smax = smin;
            for (int64_t c = 1; c < nt; ++c) {
              smin = std::min(smin, group_values[c]);
              smax = std::max(smax, group_values[c]);
            }
            superblock_bounds(smin, smax, m.super_lo[sk], m.super_hi[sk]);
          }
          float lo = group_values[0], hi = lo;
          for (int64_t c = 1; c < n; ++c) {
            lo = std::min(lo, group_values[c]);
            hi = std::max(hi, group_values[c]);
          }
          const float slo = s.ranges == RangeKind::Scaled8 ? m.super_lo[sk] : 0.0f;
          const float shi = s.ranges == RangeKind::Scaled8 ? m.super_hi[sk] : 0.0f;
          // Stored as the file holds them: quantize with exactly those bounds.
          StoredRange sr = store_range(s.ranges, lo, hi, slo, shi);
          if (s.clip_search) {
            // The min-max range spends levels on the extremes; a narrower one (GPTQ's `mse` grid search
            // over the group's current weights, each column at its own level count) often rounds the
            // bulk better. Candidates are the stored ranges of shrunk bounds.
            double best = -1;
            for (int k = 0; k <= 8; ++k) {
              const float shrink = 1.0f - 0.025f * static_cast<float>(k);
              const StoredRange cand = store_range(s.ranges, lo * shrink, hi * shrink, slo, shi);
              double e = 0;
              if (group_levels > 1) {
                e = clip_error(group_values, n, fit_grid(cand.lo, cand.hi, group_levels - 1, s.sym));
              } else {
                int grid_levels = 0;
                GridParams grid;
                for (int64_t c = i1; c < c1; ++c) {
                  const int L = m.levels[perm[c]];
                  if (L == 1) continue;
                  if (L != grid_levels) grid = fit_grid(cand.lo, cand.hi, L - 1, s.sym), grid_levels = L;
                  e += clip_error(group_values + (c - i1), 1, grid);
                }
              }
              if (best < 0 || e < best) best = e, sr = cand;
            }
          }
          m.lo[r * m.n_groups + g] = sr.lo;
          m.hi[r * m.n_groups + g] = sr.hi;
          if (s.ranges == RangeKind::Scaled8) {
            m.qlo[r * m.n_groups + g] = sr.qlo;
            m.qhi[r * m.n_groups + g] = sr.qhi;
          }
        }
      }
    }
    // The block's columns, quantized in order, their differences spread over the rest of the block.
    // Rows are independent here (a row's grid is fixed at its group's start and a block never leaves
    // its group), so each thread takes chunks of rows through all the block's columns
    // (quantize_columns): one parallel region per block rather than three per column, and per row
    // loops over contiguous rows that vectorize (grids fitted once per chunk and level count). A
    // one-level column needs all rows' updated weights (it stores their mean), so it ends a run of
    // chunked columns.
    const int64_t nb = i2 - i1;
    for (int64_t j = 0; j < nb; ++j)
      for (int64_t i = 0; i < j; ++i) pt[static_cast<size_t>(j * nb + i)] = p[(i1 + i) * cols + i1 + j];
    const BlockColumns columns{wt, rows, cols, p, pt.data(), i1, i2, block_delta, chunk_loss.data(), perm.data(), !s.act_order, m.codes.data(), m.dequant.data()};
    const int64_t g = i1 / gs;
    for (int64_t a = i1; a < i2;) {
      if (m.levels[perm[a]] == 1) {
        // No code at all: the column is stored as one value, the mean of its (updated) weights.
        float* col = wt + a * rows;
        const float* dl = block_delta + (a - i1) * rows;
        double sum = 0.0;
        for (int64_t r = 0; r < rows; ++r) sum += col[r] + dl[r];
        const float mean = round_to_f16(static_cast<float>(sum / static_cast<double>(rows)));
        m.column_mean[perm[a]] = mean;
        const float ra = f.r(a);
        double loss = 0.0;
        for (int64_t r = 0; r < rows; ++r) {
          m.codes[r * cols + perm[a]] = 0;
          m.dequant[r * cols + perm[a]] = mean;
          const float e = (col[r] + dl[r] - mean) * ra;
          loss += static_cast<double>(e) * e;
          col[r] -= mean;  // its differences, for the later columns' updates
        }
        mean_loss[static_cast<size_t>(a - i1)] = loss;
        spread_error(columns, a, col, rows, block_delta, i1, rows);
        ++a;
        continue;
      }
      int64_t c = a + 1;
      while (c < i2 && m.levels[perm[c]] != 1) ++c;
#pragma omp parallel for schedule(static)
      for (int64_t r0 = 0; r0 < rows; r0 += kRowChunk) {
        const int64_t r1 = std::min(rows, r0 + kRowChunk);
        int grid_levels = 0;
        const auto grids = [&](int64_t i, float* scale, float* zero, int& maxq) {
          const int L = m.levels[perm[i]];
          if (L == grid_levels) return;
          for (int64_t r = r0; r < r1; ++r) {
            const size_t at = static_cast<size_t>(r * m.n_groups + g);
            const GridParams grid = fit_grid(m.lo[at], m.hi[at], L - 1, s.sym);
            scale[r - r0] = grid.scale;
            zero[r - r0] = grid.zero;
          }
          maxq = L - 1;
          grid_levels = L;
        };
        quantize_columns(columns, a, c, r0, r1, grids);
      }
      a = c;
    }
    for (int64_t i = i1; i < i2; ++i) {
      m.group_of[perm[i]] = static_cast<int32_t>(g);
      double col_loss = 0.0;  // the chunks' sums in row order: the same for any thread count
      if (m.levels[perm[i]] == 1)
        col_loss = mean_loss[static_cast<size_t>(i - i1)];
      else
        for (int64_t chunk = 0; chunk * kRowChunk < rows; ++chunk) col_loss += chunk_loss[static_cast<size_t>(chunk * (i2 - i1) + i - i1)];
      m.column_loss[perm[i]] = col_loss;
      const double ri = f.r(i);
      m.column_sq_error[perm[i]] = col_loss / (ri * ri);  // Σ (w' − q)², GPTQ's ℓ·U_ii²
    }
    // The block's differences into the rest of its panel: one GEMM.
    if (i2 < p2)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(p2 - i2), static_cast<int>(rows),
                  static_cast<int>(i2 - i1), -1.0f, p + i1 * cols + i2, static_cast<int>(cols), wt + i1 * rows,
                  static_cast<int>(rows), 1.0f, delta.data() + (i2 - p1) * rows, static_cast<int>(rows));
    i1 = i2;
  }
  m.loss = std::accumulate(m.column_loss.begin(), m.column_loss.end(), 0.0);
  // The proxy loss without its 2·rows·cols² product (twice the FLOPs of the updates above): with
  // GPTQ's errors e_i = (w'_i − q_i)/U_ii and updates w'_j = w_j − Σ_{i<j} e_i·U_ij (what the P form
  // computes), W − Q = e·U, so
  // Σ_j ℓ_j = Σ_r ‖e_r‖² = Σ_r d_r (UᵀU)⁻¹ d_rᵀ with d = W − Q in visiting order — the quadratic form of
  // the Hessian as factorised: H + λI, plus 1 on a dead input's diagonal (whose row and column of H
  // are zero, and whose weights the solve took as zero). What λ and those ones add is subtracted.
  // Per row: λ·Σ_j d_j² + Σ_dead d_j², the first in eight partial sums over the columns in original
  // order (one dependent sum stalled on its own latency; a fixed order still gives any thread count
  // the same value).
  std::vector<int64_t> dead_columns;
  for (int64_t i = 0; i < cols; ++i)
    if (dead[i]) dead_columns.push_back(perm[i]);
  std::vector<double> extra(static_cast<size_t>(rows), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    const float* qr = m.dequant.data() + r * cols;
    constexpr int kLanes = 8;
    double lane[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= cols; j += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        const double d = static_cast<double>(wr[j + k]) - qr[j + k];
        lane[k] += d * d;
      }
    for (; j < cols; ++j) {
      const double d = static_cast<double>(wr[j]) - qr[j];
      lane[0] += d * d;
    }
    double dead_sum = 0.0;
    for (int64_t c : dead_columns) {  // the solve took a dead input's weight as zero
      const double d = static_cast<double>(wr[c]) - qr[c], q = qr[c];
      lane[0] += q * q - d * d;
      dead_sum += q * q;
    }
    double sum = 0.0;
    for (double v : lane) sum += v;
    extra[static_cast<size_t>(r)] = f.damp * sum + dead_sum;
  }
  m.proxy_loss = std::max(0.0, m.loss - std::accumulate(extra.begin(), extra.end(), 0.0));  // rows in order: any thread count
  return m;
}

}  // namespace baq
