// The planes code layout: every column has 2^b levels, and a row's b-bit codes are split into planes
// of 4, 2 and 1 bits (lowest bits first). Along a plane, columns go in chunks of 128: a chunk is
// 16·w bytes where byte i, bit slot s holds the code of column 16·(s + (8/w)·(i / 16)) + i % 16 —
// so 16 bytes widened to 32-bit lanes give 8/w runs of 16 consecutive columns by one shift and mask
// each. The last partial chunk is dense, least significant bits first. A row costs b bits per column
// plus under a byte per plane: no other waste.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "baq/error.hpp"
#include "pack/code_layouts.hpp"

namespace baq {

namespace {

constexpr int64_t kChunk = 128;
// The VNNI kernel's longest input segment (columns rounded with one step per kernel lane, and summed
// in integers before F32): 512 keeps a lane's step to the largest |x| of its 128 columns.
constexpr int64_t kMaxSegment = 512;

int code_bits(int levels) {
  int b = 0;
  while ((1 << b) < levels) ++b;
  return b;
}

int64_t plane_bytes(int64_t cols, int w) { return (cols / kChunk) * 16 * w + ((cols % kChunk) * w + 7) / 8; }

}  // namespace

std::vector<int> plane_widths(int bits) {
  static const std::vector<int> table[9] = {{}, {1}, {2}, {2, 1}, {4}, {4, 1}, {4, 2}, {4, 2, 1}, {4, 4}};
  if (bits < 1 || bits > 8) fail("bit planes: {} bits per code outside 1..8", bits);
  return table[bits];
}

bool planes_accepts(const std::vector<int>& levels, bool natural_groups) {
  if (levels.empty() || !natural_groups) return false;
  const int L = levels.front();
  if (L < 2 || L > 256 || (L & (L - 1)) != 0) return false;
  return std::all_of(levels.begin(), levels.end(), [&](int l) { return l == L; });
}

int64_t planes_row_bits(const PackedLinear& p) {
  int64_t bytes = 0;
  for (int w : p.plane_bits) bytes += plane_bytes(p.cols, w);
  return 8 * bytes;  // whole bytes: the SIMD decode loads a row's planes from byte addresses
}

void planes_pack_row(PackedLinear& p, int64_t r, const uint8_t* codes) {
  uint8_t* plane = p.row_codes(r);
  int offset = 0;
  const int64_t chunks = p.cols / kChunk, full = chunks * kChunk;
  for (int w : p.plane_bits) {
    const unsigned mask = (1u << w) - 1;
    const int per = 8 / w;
    // Byte by byte, as planes_unpack_row reads them: each byte written once, 16 at a time (a column at
    // a time, each column's byte and shift computed, took a third of the pack stage).
    for (int64_t c = 0; c < chunks; ++c) {
      uint8_t* bytes = plane + c * 16 * w;
      const uint8_t* in = codes + c * kChunk;
      for (int g = 0; g < w; ++g) {
        uint8_t packed[16] = {};
        for (int s = 0; s < per; ++s) {
          const uint8_t* run = in + 16 * (g * per + s);
          for (int i = 0; i < 16; ++i) packed[i] = static_cast<uint8_t>(packed[i] | (((run[i] >> offset) & mask) << (s * w)));
        }
        std::memcpy(bytes + 16 * g, packed, 16);
      }
    }
    uint8_t* tail = plane + chunks * 16 * w;
    std::memset(tail, 0, static_cast<size_t>(plane_bytes(p.cols, w) - chunks * 16 * w));
    for (int64_t j = full; j < p.cols; ++j) {
      const int64_t bit = (j - full) * w;
      tail[bit / 8] |= static_cast<uint8_t>(((codes[j] >> offset) & mask) << (bit % 8));
    }
    plane += plane_bytes(p.cols, w);
    offset += w;
  }
}

void planes_unpack_row(const PackedLinear& p, int64_t r, uint8_t* codes) {
  const uint8_t* in = p.row_codes(r);
  std::memset(codes, 0, static_cast<size_t>(p.cols));
  int offset = 0;
  const uint8_t* plane = in;
  const int64_t chunks = p.cols / kChunk, full = chunks * kChunk;
  for (int w : p.plane_bits) {
    const unsigned mask = (1u << w) - 1;
    const int per = 8 / w;
    // Byte by byte: byte i of a chunk holds slot s of column 16·((i / 16)·per + s) + i % 16.
    for (int64_t c = 0; c < chunks; ++c) {
      const uint8_t* bytes = plane + c * 16 * w;
      uint8_t* out = codes + c * kChunk;
      for (int g = 0; g < w; ++g)
        for (int s = 0; s < per; ++s) {
          uint8_t* run = out + 16 * (g * per + s);
          for (int i = 0; i < 16; ++i)
            run[i] = static_cast<uint8_t>(run[i] | (((bytes[16 * g + i] >> (s * w)) & mask) << offset));
        }
    }
    const uint8_t* tail = plane + chunks * 16 * w;
    for (int64_t j = full; j < p.cols; ++j) {
      const int64_t bit = (j - full) * w;
      codes[j] |= static_cast<uint8_t>(((tail[bit / 8] >> (bit % 8)) & mask) << offset);
    }
    plane += plane_bytes(p.cols, w);
    offset += w;
  }
}

namespace {

// What one product's input contributes besides x: Σ_{j∈g} x_j per group, and (for the VNNI kernel,
// filled by round_input) x rounded per segment of `seg` columns (64 to kMaxSegment, so that groups hold whole
// segments) with four steps (one per kernel lane, max|x| over that lane's columns): to 16 bits, step
// max|x|/32512 and q_j = round(x_j/step) = 256·hi_j + lo_j, hi in [−127, 127] and lo in [−128, 127] —
// two int8 halves; or, under set_fused_input_bits(8), to 8 bits, step max|x|/127 and q_j = hi_j. Kept
// per thread with one copy of the x it was made from: the tasks of one product (64 rows each) compute
// it once.
struct ProductInput {
  int64_t gs = 0;
  uint64_t steady = 0;  // the SteadyInput this was made or checked under (0: none)
  std::vector<float> source, sums;
  int64_t seg = 0;  // 0 until rounded for this x
  int bits = 16;
  std::vector<int8_t> hi, lo;
  std::vector<float> step;
};

// The calling thread's SteadyInput: its inputs (count rows `stride` apart from x) and a number no
// other has had on this thread.
struct Steady {
  const float* x = nullptr;
  int64_t count = 0, stride = 0;
  uint64_t id = 0, last = 0;
};
thread_local Steady t_steady;

// The thread's prepared input for x: one per row of a steady batch (a prompt's tokens take turns on
// the same rows of weights), else one.
ProductInput& product_input(const float* x, int64_t cols, int64_t gs) {
  thread_local std::vector<ProductInput> cache(1);
  uint64_t steady = 0;
  size_t slot = 0;
  const auto at = (reinterpret_cast<uintptr_t>(x) - reinterpret_cast<uintptr_t>(t_steady.x)) / sizeof(float);
  if (t_steady.x != nullptr && x >= t_steady.x) {
    if (at == 0 || (t_steady.stride > 0 && at % t_steady.stride == 0 && at / t_steady.stride < static_cast<uintptr_t>(t_steady.count))) {
      steady = t_steady.id;
      slot = at == 0 ? 0 : at / static_cast<size_t>(t_steady.stride);
      if (cache.size() <= slot) cache.resize(slot + 1);
    }
  }
  ProductInput& c = cache[slot];
  if (c.gs == gs && c.source.size() == static_cast<size_t>(cols)) {
    if (steady != 0 && c.steady == steady) return c;
    if (std::memcmp(c.source.data(), x, static_cast<size_t>(cols) * sizeof(float)) == 0) {
      c.steady = steady;
      return c;
    }
  }
  c.steady = steady;
  c.gs = gs;
  c.seg = 0;
  c.source.assign(x, x + cols);
  const int64_t ng = (cols + gs - 1) / gs;
  c.sums.assign(static_cast<size_t>(ng), 0.0f);
  for (int64_t g = 0; g < ng; ++g) {
    // Eight running sums: one chain of dependent adds would cost a latency per column.
    const int64_t j0 = g * gs, j1 = std::min(cols, j0 + gs);
    float part[8] = {};
    int64_t j = j0;
    for (; j + 8 <= j1; j += 8)
      for (int k = 0; k < 8; ++k) part[k] += x[j + k];
    for (; j < j1; ++j) part[0] += x[j];
    c.sums[static_cast<size_t>(g)] = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  }
  return c;
}

// The scalar path: a row's codes unpacked, then the grouped sum.
float row_dot_scalar(const float* x, const PackedLinear& p, int64_t r, const float* scale, const uint8_t* zero,
                     const float* xsum, std::vector<uint8_t>& codes) {
  planes_unpack_row(p, r, codes.data());
  const int64_t gs = p.group_size > 0 ? p.group_size : p.cols;
  float total = 0.0f;
  for (int64_t g = 0; g < p.n_groups; ++g) {
    float acc = 0.0f;
    for (int64_t j = g * gs; j < std::min(p.cols, (g + 1) * gs); ++j) acc += static_cast<float>(codes[j]) * x[j];
    total += scale[g] * (acc - static_cast<float>(zero[g]) * xsum[g]);
  }
  return total;
}

// The tail (the last partial chunk, dense) of a row: Σ_j code_j·x_j·scale_g, on the calling core.
float tail_dot(const float* x, const PackedLinear& p, int64_t r, const float* scale) {
  const int64_t full = p.cols / kChunk * kChunk, gs = p.group_size > 0 ? p.group_size : p.cols;
  if (full == p.cols) return 0.0f;
  const uint8_t* plane = p.row_codes(r);
  float sum = 0.0f;
  thread_local std::vector<int> code;
  code.assign(static_cast<size_t>(p.cols - full), 0);
  int offset = 0;
  for (int w : p.plane_bits) {
    const uint8_t* tail = plane + (p.cols / kChunk) * 16 * w;
    for (int64_t j = full; j < p.cols; ++j) {
      const int64_t bit = (j - full) * w;
      code[static_cast<size_t>(j - full)] |= ((tail[bit / 8] >> (bit % 8)) & ((1 << w) - 1)) << offset;
    }
    plane += plane_bytes(p.cols, w);
    offset += w;
  }
  for (int64_t j = full; j < p.cols; ++j) sum += scale[j / gs] * static_cast<float>(code[static_cast<size_t>(j - full)]) * x[j];
  return sum;
}

// 16 columns' codes (run k of a 128-column chunk) from the planes, widened in 512-bit lanes. `lanes`
// holds each plane's 16-byte groups already widened to 32 bits (w of them per plane).
template <int B>
struct Planes {
  static constexpr int kWidths[3] = {B == 1 ? 1 : B == 2 || B == 3 ? 2 : 4, B == 3 || B == 5 ? 1 : B == 6 ? 2 : B == 7 ? 2 : B == 8 ? 4 : 0,
                                     B == 7 ? 1 : 0};
  static constexpr int kCount = B == 7 ? 3 : (B == 3 || B == 5 || B == 6 || B == 8) ? 2 : 1;
};

// Where each plane of rows r0..r0+R−1 starts.
template <int B, int R>
void row_planes(const PackedLinear& p, int64_t r0, const uint8_t* (&plane)[R][3]) {
  for (int i = 0; i < R; ++i) {
    const uint8_t* at = p.row_codes(r0 + i);
    for (int k = 0; k < Planes<B>::kCount; ++k) {
      plane[i][k] = at;
      at += plane_bytes(p.cols, Planes<B>::kWidths[k]);
    }
  }
}

// R rows at once (they share every x load and the loop's bookkeeping): dots[i] = Σ_g scale_ig·Σ_{j∈g}
// code_ij·x_j for rows r0..r0+R−1 over the whole 128-column chunks. `scale` holds R rows of n_groups.
// GCC 12 builds several AVX-512 intrinsics (cvtepu8_epi32, srli/slli_epi32, cvtepi32_ps,
// reduce_add_ps) from an undefined vector and then warns in every caller that it is uninitialised;
// those lanes are always overwritten, so the warning is silenced here only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int B, int R, bool kGroups>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void rows_avx512(const float* x, const PackedLinear& p, int64_t r0,
                                                                     const float* scale, float* dots) {
  using P = Planes<B>;
  const int64_t chunks = p.cols / kChunk, gs = p.group_size > 0 ? p.group_size : p.cols;
  const uint8_t* plane[R][3];
  row_planes<B, R>(p, r0, plane);
  __m512 total[R], acc[R];
  for (int i = 0; i < R; ++i) total[i] = acc[i] = _mm512_setzero_ps();
  int64_t group = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    __m512i wide[R][3][4];
    for (int i = 0; i < R; ++i)
      for (int k = 0; k < P::kCount; ++k)
        for (int g = 0; g < P::kWidths[k]; ++g)
          wide[i][k][g] = _mm512_cvtepu8_epi32(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(plane[i][k] + c * 16 * P::kWidths[k] + 16 * g)));
#pragma GCC unroll 8
    for (int run = 0; run < 8; ++run) {
      const int64_t j = c * kChunk + 16 * run;
      if constexpr (kGroups) {
        if (j / gs != group) {  // a new group: fold the finished one in at its scale
          for (int i = 0; i < R; ++i) {
            total[i] = _mm512_fmadd_ps(acc[i], _mm512_set1_ps(scale[i * p.n_groups + group]), total[i]);
            acc[i] = _mm512_setzero_ps();
          }
          group = j / gs;
        }
      }
      const __m512 xv = _mm512_loadu_ps(x + j);
      // A 1-bit plane (the top bit of 3, 5 and 7-bit codes) adds 2^offset·x where its bit is set: a
      // test and a masked add instead of shifting the bit into the code.
      const __m512 top = _mm512_mul_ps(xv, _mm512_set1_ps(static_cast<float>(1 << (B - 1))));
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        __m512i code = _mm512_setzero_si512();
        int offset = 0;
        __mmask16 top_bits = 0;
#pragma GCC unroll 3
        for (int k = 0; k < P::kCount; ++k) {
          const int w = P::kWidths[k], per = 8 / w;
          if (w == 1 && k > 0) {
            top_bits = _mm512_test_epi32_mask(wide[i][k][run / per], _mm512_set1_epi32(1 << (run % per)));
          } else {
            const __m512i bits = _mm512_and_si512(_mm512_srli_epi32(wide[i][k][run / per], static_cast<unsigned>((run % per) * w)),
                                                  _mm512_set1_epi32((1 << w) - 1));
            code = offset == 0 ? bits : _mm512_or_si512(code, _mm512_slli_epi32(bits, static_cast<unsigned>(offset)));
          }
          offset += w;
        }
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(code), xv, acc[i]);
        if (P::kWidths[P::kCount - 1] == 1 && P::kCount > 1) acc[i] = _mm512_mask_add_ps(acc[i], top_bits, acc[i], top);
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    const __m512 t = kGroups ? _mm512_fmadd_ps(acc[i], _mm512_set1_ps(scale[i * p.n_groups + group]), total[i])
                             : _mm512_mul_ps(acc[i], _mm512_set1_ps(scale[i * p.n_groups]));
    dots[i] = _mm512_reduce_add_ps(t);
  }
}
#pragma GCC diagnostic pop

#pragma GCC diagnostic push  // GCC 12's AVX-512 intrinsics: see rows_avx512
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The first n columns of in.source rounded per segment of `seg` to `bits` (16 or 8; see
// ProductInput). A segment has four steps, one per 128-bit lane of the kernel's products: lane L sums
// columns 16L..16L+15 of every 64 in the segment, so its step is max|x|/range over those alone (an
// outlier coarsens a quarter of the segment, not all of it).
__attribute__((target("avx512f,avx512bw,avx512vl"))) void round_input(ProductInput& r, int64_t n, int64_t seg, int bits) {
  if (r.seg == seg && r.bits == bits) return;
  r.seg = seg;
  r.bits = bits;
  const bool eight = bits == 8;
  const float* x = r.source.data();
  r.hi.resize(static_cast<size_t>(n));
  r.lo.resize(eight ? 0 : static_cast<size_t>(n));
  r.step.resize(static_cast<size_t>(n / seg * 16));
  // 8-bit steps are kept divided by 256: the kernel's sums are 256·Σ code·hi + Σ code·lo either way.
  const float range = eight ? 127.0f : 32512.0f, scale = eight ? 1.0f / 256.0f : 1.0f;
  const __m512i limit = _mm512_set1_epi32(eight ? 127 : 32512), half = _mm512_set1_epi32(128);
  for (int64_t s = 0; s < n / seg; ++s) {
    const float* xs = x + s * seg;
    float top[4] = {};
    for (int64_t j = 0; j < seg; j += 16)
      top[(j / 16) % 4] = std::max(top[(j / 16) % 4], _mm512_reduce_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xs + j))));
    for (int e = 0; e < 16; ++e) r.step[static_cast<size_t>(s * 16 + e)] = top[e / 4] / range * scale;
    for (int64_t j = 0; j < seg; j += 16) {
      const float t = top[(j / 16) % 4];
      const __m512 inv = _mm512_set1_ps(t > 0.0f ? range / t : 0.0f);
      __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xs + j), inv));  // to nearest, even on ties
      q = _mm512_max_epi32(_mm512_min_epi32(q, limit), _mm512_sub_epi32(_mm512_setzero_si512(), limit));
      if (eight) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(r.hi.data() + s * seg + j), _mm512_cvtepi32_epi8(q));
        continue;
      }
      const __m512i hi = _mm512_srai_epi32(_mm512_add_epi32(q, half), 8);
      const __m512i lo = _mm512_sub_epi32(q, _mm512_slli_epi32(hi, 8));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(r.hi.data() + s * seg + j), _mm512_cvtepi32_epi8(hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(r.lo.data() + s * seg + j), _mm512_cvtepi32_epi8(lo));
    }
  }
}

// Where the VNNI kernel lets a plane's bits lie. Plane k of width w holds run 4h + L of a 64-column
// half h in 128-bit lane L at bit n = 4(L % 2) (w = 4), 2L (w = 2) or 4h + L (w = 1). Moving every
// plane to its offset o_k in the code costs a rotation (the multiply port's, like the products'); but
// a code needs only to be consistent within a lane: built at o_k + d_L it is the code times 2^d_L, and
// the lane's sum is scaled back by 2^−d_L at the end (exact: a power of two). So d_L is chosen, within
// what a byte holds (b + d_L ≤ 8), to leave the most planes where they lie: no rotation at all for 2,
// 4 and half of the 1-bit halves.
struct VnniLanes {
  int d[4] = {};
  bool rotate[2][3] = {};
  // As vectors: per half and plane, the 64-bit lanes' rotations from where the plane lies to
  // o_k + d_L; per plane, the mask of its bits there; per 128-bit lane, 2^−d_L.
  alignas(64) int64_t counts[2][3][8] = {};
  alignas(64) uint8_t masks[3][64] = {};
  alignas(64) float unshift[16] = {};
};

constexpr int natural_bit(int w, int h, int lane) { return w == 4 ? 4 * (lane % 2) : w == 2 ? 2 * lane : 4 * h + lane; }

template <int B>
constexpr VnniLanes vnni_lanes() {
  using P = Planes<B>;
  VnniLanes best;
  int fewest = 7;
  const int top = 8 - B;
  for (int code = 0; code < (top + 1) * (top + 1) * (top + 1) * (top + 1); ++code) {
    VnniLanes v;
    for (int lane = 0, c = code; lane < 4; ++lane, c /= top + 1) v.d[lane] = c % (top + 1);
    int count = 0;
    for (int h = 0; h < 2; ++h) {
      int offset = 0;
      for (int k = 0; k < P::kCount; ++k) {
        for (int lane = 0; lane < 4; ++lane)
          if (natural_bit(P::kWidths[k], h, lane) != offset + v.d[lane]) v.rotate[h][k] = true;
        count += v.rotate[h][k] ? 1 : 0;
        offset += P::kWidths[k];
      }
    }
    if (count < fewest) {
      fewest = count;
      best = v;
    }
  }
  int offset = 0;
  for (int k = 0; k < P::kCount; ++k) {
    const int w = P::kWidths[k];
    for (int h = 0; h < 2; ++h)
      for (int lane = 0; lane < 8; ++lane) best.counts[h][k][lane] = (natural_bit(w, h, lane / 2) - offset - best.d[lane / 2]) & 63;
    for (int b = 0; b < 64; ++b) best.masks[k][b] = static_cast<uint8_t>(((1 << w) - 1) << (offset + best.d[b / 16]));
    offset += w;
  }
  for (int e = 0; e < 16; ++e) best.unshift[e] = 1.0f / static_cast<float>(1 << best.d[e / 4]);
  return best;
}

// R rows at once with AVX-512 VNNI: 64 columns' codes are built as bytes straight from the planes —
// a plane's 16-byte group broadcast to the four 128-bit lanes, rotated to its slot where it must move
// (see VnniLanes) and masked — then multiplied by both input halves at 64 products per instruction.
// Integer sums stay exact within a segment (a lane sums seg/16 products of |code| ≤ 255 and |q| ≤
// 32512: at most 32 · 255 · 32512 < 2^29 for kMaxSegment) and enter F32 once per segment at its step,
// and meet the scale once per group. `blocks` runs of R rows one after another (rows r0..r0+blocks·R,
// their dots in order): one call per task, so the lanes' constants are set up once, not per R rows
// (a 2048-wide row of 2-bit codes is ~100 cycles of products).
template <int B, int R, bool kWide>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void rows_vnni(const ProductInput& xr, const PackedLinear& p,
                                                                              int64_t r0, int64_t blocks, const float* scale,
                                                                              float* dots) {
  using P = Planes<B>;
  static constexpr VnniLanes kLanes = vnni_lanes<B>();
  const int64_t chunks = p.cols / kChunk, gs = p.group_size > 0 ? p.group_size : p.cols, seg = xr.seg;
  __m512i rotate[2][3], mask[3];
  for (int k = 0; k < P::kCount; ++k) {
    for (int h = 0; h < 2; ++h) rotate[h][k] = _mm512_load_si512(kLanes.counts[h][k]);
    mask[k] = _mm512_load_si512(kLanes.masks[k]);
  }
  const __m512 unshift = _mm512_load_ps(kLanes.unshift);
  for (int64_t block = 0; block < blocks; ++block, r0 += R, scale += R * p.n_groups, dots += R) {
    const uint8_t* plane[R][3];
    row_planes<B, R>(p, r0, plane);
    __m512 total[R], group[R];
    __m512i acc_hi[R], acc_lo[R];
    for (int i = 0; i < R; ++i) {
      total[i] = group[i] = _mm512_setzero_ps();
      acc_hi[i] = acc_lo[i] = _mm512_setzero_si512();
    }
    // Segment s and its group g counted as the loop goes (a division per segment cost as much as the
    // segment's products): groups hold whole segments of `seg` columns (64..kMaxSegment), a segment
    // whole 64-column halves.
    int64_t s = 0, g = 0;
    const int64_t per_group = p.n_groups > 1 ? gs / seg : chunks * kChunk / seg + 1, per_segment = seg / 64;
    int64_t left = per_group, halves = per_segment;
    // The same place two calls' rows on, asked for as each chunk starts: the core's own prefetchers see
    // short interleaved streams (a 2048-wide row of 2-bit codes is 8 lines) and left a token at about
    // half the bandwidth of a plain read. (Two calls ahead measured better than one or four, and into
    // L2 better than into L1 — T1, not T0 — by 20–60 % from memory: an L1 of 32 KB holds only a few
    // calls' rows beside the inputs.)
    const int64_t ahead = 2 * R * (p.row_bits / 8);
    for (int64_t c = 0; c < chunks; ++c) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const int64_t j = c * kChunk + 64 * h;
        const __m512i xh = _mm512_loadu_si512(xr.hi.data() + j);
        const __m512i xl = kWide ? _mm512_loadu_si512(xr.lo.data() + j) : xh;
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
          __m512i code = _mm512_setzero_si512();
#pragma GCC unroll 3
          for (int k = 0; k < P::kCount; ++k) {
            const int w = P::kWidths[k];
            const uint8_t* bytes = plane[i][k] + c * 16 * w;
            __m512i v;
            if (w == 4) {
              v = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes + 32 * h)));
              v = _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(1, 1, 0, 0));
            } else {
              v = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + (w == 2 ? 16 * h : 0))));
            }
            // Into L2 (_mm_prefetch breaks unoptimised builds), once per line: a plane of w bits
            // has 16·w bytes a chunk, so a line every 4/w chunks.
            if (h == 0 && (c * w) % 4 == 0) __builtin_prefetch(bytes + ahead, 0, 2);
            if (kLanes.rotate[h][k]) v = _mm512_rorv_epi64(v, rotate[h][k]);
            // (or and and, not a ternary-logic instruction: its immediate does not survive unoptimised builds)
            code = k == 0 ? _mm512_and_si512(v, mask[k]) : _mm512_or_si512(code, _mm512_and_si512(v, mask[k]));
          }
          acc_hi[i] = _mm512_dpbusd_epi32(acc_hi[i], code, xh);
          if constexpr (kWide) acc_lo[i] = _mm512_dpbusd_epi32(acc_lo[i], code, xl);
        }
        if (--halves == 0) {  // the segment ends: into F32 at its step (one broadcast for all rows)
          halves = per_segment;
          const __m512 step = _mm512_loadu_ps(xr.step.data() + 16 * s);
          for (int i = 0; i < R; ++i) {
            const __m512i q = _mm512_add_epi32(_mm512_slli_epi32(acc_hi[i], 8), acc_lo[i]);
            group[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), step, group[i]);
            acc_hi[i] = acc_lo[i] = _mm512_setzero_si512();
          }
          ++s;
          if (--left == 0) {  // the group ends: at its scale
            for (int i = 0; i < R; ++i) {
              total[i] = _mm512_fmadd_ps(group[i], _mm512_set1_ps(scale[i * p.n_groups + g]), total[i]);
              group[i] = _mm512_setzero_ps();
            }
            ++g;
            left = per_group;
          }
        }
      }
    }
    if (g < p.n_groups)  // the last group, when the whole chunks end inside it
      for (int i = 0; i < R; ++i) total[i] = _mm512_fmadd_ps(group[i], _mm512_set1_ps(scale[i * p.n_groups + g]), total[i]);
    for (int i = 0; i < R; ++i) dots[i] = _mm512_reduce_add_ps(_mm512_mul_ps(total[i], unshift));
  }
}

// Rows r0..r1−1 decoded to F32 (out: (r1−r0) × cols) from the prepared grids, 16 columns at a time:
// each run's codes shifted out of the widened planes, then scale·(code − zero) — the two IEEE
// operations GridParams::value does, so the bits are dequantize()'s. (Codes unpacked byte by byte and
// grids fitted per row had cost ~1.8 ns a weight: 2 s per batch on a 1.1B model.)
template <int B>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void decode_avx512(const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  using P = Planes<B>;
  const int64_t chunks = p.cols / kChunk, full = chunks * kChunk, gs = p.group_size > 0 ? p.group_size : p.cols;
  const int64_t ng = p.n_groups;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* plane[1][3];
    row_planes<B, 1>(p, r, plane);
    const float* scale = p.row_scale.data() + r * ng;
    const uint8_t* zero = p.row_zero.data() + r * ng;
    float* row = out + (r - r0) * p.cols;
    for (int64_t c = 0; c < chunks; ++c) {
      __m512i wide[3][4];
      for (int k = 0; k < P::kCount; ++k)
        for (int g = 0; g < P::kWidths[k]; ++g)
          wide[k][g] = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(plane[0][k] + c * 16 * P::kWidths[k] + 16 * g)));
#pragma GCC unroll 8
      for (int run = 0; run < 8; ++run) {
        const int64_t j = c * kChunk + 16 * run, g = j / gs;
        __m512i code = _mm512_setzero_si512();
        int offset = 0;
        for (int k = 0; k < P::kCount; ++k) {
          const int w = P::kWidths[k], per = 8 / w;
          const __m512i bits = _mm512_and_si512(_mm512_srli_epi32(wide[k][run / per], static_cast<unsigned>((run % per) * w)),
                                                _mm512_set1_epi32((1 << w) - 1));
          code = _mm512_or_si512(code, _mm512_slli_epi32(bits, static_cast<unsigned>(offset)));
          offset += w;
        }
        const __m512 v = _mm512_mul_ps(_mm512_set1_ps(scale[g]),
                                       _mm512_sub_ps(_mm512_cvtepi32_ps(code), _mm512_set1_ps(static_cast<float>(zero[g]))));
        _mm512_storeu_ps(row + j, v);
      }
    }
    if (full < p.cols) {
      thread_local std::vector<uint8_t> codes;
      codes.resize(static_cast<size_t>(p.cols));
      planes_unpack_row(p, r, codes.data());
      for (int64_t j = full; j < p.cols; ++j)
        row[j] = scale[j / gs] * (static_cast<float>(codes[static_cast<size_t>(j)]) - static_cast<float>(zero[j / gs]));
    }
  }
}
#pragma GCC diagnostic pop

template <int B>
__attribute__((target("avx2,fma"))) float row_dot_avx2(const float* x, const PackedLinear& p, int64_t r, const float* scale) {
  using P = Planes<B>;
  const int64_t chunks = p.cols / kChunk, gs = p.group_size > 0 ? p.group_size : p.cols;
  const uint8_t* row = p.row_codes(r);
  const uint8_t* plane[3];
  {
    const uint8_t* at = row;
    for (int k = 0; k < P::kCount; ++k) {
      plane[k] = at;
      at += plane_bytes(p.cols, P::kWidths[k]);
    }
  }
  __m256 total = _mm256_setzero_ps(), acc = _mm256_setzero_ps();
  int64_t group = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    for (int run = 0; run < 8; ++run) {
      const int64_t j = c * kChunk + 16 * run;
      if (j / gs != group) {
        total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale[group]), total);
        acc = _mm256_setzero_ps();
        group = j / gs;
      }
      for (int half = 0; half < 2; ++half) {
        __m256i code = _mm256_setzero_si256();
        int offset = 0;
        for (int k = 0; k < P::kCount; ++k) {
          const int w = P::kWidths[k], per = 8 / w;
          const uint8_t* bytes = plane[k] + c * 16 * w + 16 * (run / per) + 8 * half;
          const __m256i wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
          const __m256i bits = _mm256_and_si256(_mm256_srli_epi32(wide, (run % per) * w), _mm256_set1_epi32((1 << w) - 1));
          code = _mm256_or_si256(code, _mm256_slli_epi32(bits, offset));
          offset += w;
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(code), _mm256_loadu_ps(x + j + 8 * half), acc);
      }
    }
  }
  total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale[group]), total);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

using RowDot = float (*)(const float*, const PackedLinear&, int64_t, const float*);
using RowsDot = void (*)(const float*, const PackedLinear&, int64_t, const float*, float*);
using RowsVnni = void (*)(const ProductInput&, const PackedLinear&, int64_t, int64_t, const float*, float*);

// f.operator()<B>() for B = bits (1..8): the one switch from a linear's width to the kernels compiled
// for it.
template <typename F>
decltype(auto) with_bits(int bits, F&& f) {
  switch (bits) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    case 7: return f.template operator()<7>();
    default: return f.template operator()<8>();
  }
}

}  // namespace

bool planes_decode_rows(const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  const int64_t gs = p.group_size > 0 ? p.group_size : p.cols;
  const KernelIsa isa = kernel_isa();
  if ((isa != KernelIsa::Avx512 && isa != KernelIsa::Avx512Vnni) || gs % 16 != 0 ||
      p.row_scale.size() != static_cast<size_t>(p.rows * p.n_groups))
    return false;
  with_bits(code_bits(p.levels.front()), [&]<int B>() { decode_avx512<B>(p, r0, r1, out); });
  return true;
}

SteadyInput::SteadyInput(const float* x, int64_t count, int64_t stride) {
  t_steady.x = x;
  t_steady.count = count;
  t_steady.stride = stride;
  t_steady.id = ++t_steady.last;
}

SteadyInput::~SteadyInput() { t_steady.x = nullptr; }

void planes_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  const int bits = code_bits(p.levels.front());
  const int64_t gs = p.group_size > 0 ? p.group_size : p.cols, ng = p.n_groups;
  // Per-call buffers live with the thread: a token's matvecs allocate nothing.
  thread_local std::vector<uint8_t> codes;
  ProductInput& input = product_input(x, p.cols, gs);
  const std::vector<float>& xsum = input.sums;
  // Every (row, group)'s grid was fitted at load (PackedLinear::prepare): rows r.. are consecutive
  // there, so a run of rows' scales is read in place.
  if (p.row_scale.size() != static_cast<size_t>(p.rows * ng)) fail("packed linear: grids not prepared");
  const float* scale = p.row_scale.data();
  const uint8_t* zero = p.row_zero.data();
  // The SIMD paths step 16 columns at a time: groups must not start inside a run of 16.
  const bool simd = gs % 16 == 0 && p.cols >= kChunk;
  const KernelIsa isa = simd ? kernel_isa() : KernelIsa::Scalar;
  // Σ_j scale·(code_j − zero)·x_j = Σ_g scale_g·(Σ_{j∈g} code_j·x_j − zero_g·Σ_{j∈g} x_j).
  // Per row, so kept small: on kdoc-6.8M's 256-wide rows this call cost 60 % of the products' time
  // while it always called tail_dot and ran the group loop for one group.
  const bool tail = p.cols % kChunk != 0;
  auto finish = [&](int64_t r, float dot) __attribute__((always_inline)) {
    const float* rs = scale + r * ng;
    const uint8_t* rz = zero + r * ng;
    float shift;
    if (ng == 1) {
      shift = rs[0] * static_cast<float>(rz[0]) * xsum[0];
    } else {
      // Eight running sums: one chain of dependent adds would cost a latency per group.
      float part[8] = {};
      int64_t g = 0;
      for (; g + 8 <= ng; g += 8)
        for (int k = 0; k < 8; ++k) part[k] += rs[g + k] * static_cast<float>(rz[g + k]) * xsum[static_cast<size_t>(g + k)];
      for (; g < ng; ++g) part[0] += rs[g] * static_cast<float>(rz[g]) * xsum[static_cast<size_t>(g)];
      shift = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    }
    out[r] = (tail ? dot + tail_dot(x, p, r, rs) : dot) - shift;
  };
  // A run of n rows' dots finished: per-row grids without a tail as one loop the compiler vectorizes
  // (row by row, its branches and a zero byte load each were ~5 % of a 2-bit token), else row by row.
  auto finish_rows = [&](int64_t r, int64_t n, const float* dots) {
    if (ng == 1 && !tail) {
      const float* rs = scale + r;
      const uint8_t* rz = zero + r;
      for (int64_t i = 0; i < n; ++i) out[r + i] = dots[i] - rs[i] * static_cast<float>(rz[i]) * xsum[0];
    } else {
      for (int64_t i = 0; i < n; ++i) finish(r + i, dots[i]);
    }
  };
  // Runs of up to 64 rows in whole fours (`fours(r, n, dots)`), then the rows left one by one
  // (`one(r, dots)`), each run finished at once.
  auto rows = [&](auto&& fours, auto&& one) {
    float dots[64];
    int64_t r = r0;
    while (r + 4 <= r1) {
      const int64_t n = std::min<int64_t>(64, (r1 - r) / 4 * 4);
      fours(r, n, dots);
      finish_rows(r, n, dots);
      r += n;
    }
    for (; r < r1; ++r) {
      one(r, dots);
      finish_rows(r, 1, dots);
    }
  };
  if (isa == KernelIsa::Avx512Vnni && (ng == 1 || gs % 64 == 0)) {
    // The longest segment that divides the whole chunks and the groups: a segment's end costs a row
    // four vector operations (as many as 128 columns' products of 2-bit codes), so 128-column segments
    // left the 2-bit kernel at half its multiplies' rate. Rounded to 8 bits, x keeps 128-column
    // segments (a step per 32 columns): there a step's reach is the damage (see `baq generate`).
    const int64_t full = p.cols / kChunk * kChunk;
    const int input_bits = fused_input_bits();
    int64_t seg = input_bits == 8 ? kChunk : kMaxSegment;
    while (seg > 64 && (full % seg != 0 || (ng > 1 && gs % seg != 0))) seg /= 2;
    round_input(input, full, seg, input_bits);
    const ProductInput& xr = input;
    const bool wide = xr.bits == 16;
    RowsVnni four, one;
    with_bits(bits, [&]<int B>() {
      four = wide ? rows_vnni<B, 4, true> : rows_vnni<B, 4, false>;
      one = wide ? rows_vnni<B, 1, true> : rows_vnni<B, 1, false>;
    });
    // A run's fours in one kernel call: the lanes' constants set up once per run.
    rows([&](int64_t r, int64_t n, float* d) { four(xr, p, r, n / 4, scale + r * ng, d); },
         [&](int64_t r, float* d) { one(xr, p, r, 1, scale + r * ng, d); });
    return;
  }
  if (isa == KernelIsa::Avx512 || isa == KernelIsa::Avx512Vnni) {
    const bool groups = ng > 1;
    RowsDot four, one;
    with_bits(bits, [&]<int B>() {
      four = groups ? rows_avx512<B, 4, true> : rows_avx512<B, 4, false>;
      one = groups ? rows_avx512<B, 1, true> : rows_avx512<B, 1, false>;
    });
    rows([&](int64_t r, int64_t n, float* d) {
           for (int64_t i = 0; i < n; i += 4) four(x, p, r + i, scale + (r + i) * ng, d + i);
         },
         [&](int64_t r, float* d) { one(x, p, r, scale + r * ng, d); });
    return;
  }
  if (isa == KernelIsa::Avx2) {
    const RowDot dot = with_bits(bits, []<int B>() -> RowDot { return row_dot_avx2<B>; });
    for (int64_t r = r0; r < r1; ++r) finish(r, dot(x, p, r, scale + r * ng));
    return;
  }
  codes.resize(static_cast<size_t>(p.cols));
  for (int64_t r = r0; r < r1; ++r) out[r] = row_dot_scalar(x, p, r, scale + r * ng, zero + r * ng, xsum.data(), codes);
}

void planes_twin_matvec_rows(const float* x, const PackedLinear& p, int64_t r0, int64_t r1, float* out) {
  const PackedLinear& twin = *p.planes_twin;
  const int64_t nd = static_cast<int64_t>(p.distinct_levels.size()), ng = p.n_groups, grids = ng * nd;
  // x' = x/(L − 1), its sums per (group, level count) and the one-level columns' share: once per
  // input and linear on each thread, not per task (the sums' scattered adds, made per task, were a
  // third of a BAQ token). A steady input (a token's, under SteadyInput) is known by its number, any
  // other by its content. Four linears' at once: gate and up take turns task by task, q, k and v
  // follow one another.
  struct Prepared {
    uint64_t serial = 0, steady = 0, id = 0, used = 0;
    std::vector<float> source, scaled, sums;
    float constant = 0.0f;
  };
  thread_local Prepared slots[4];
  thread_local uint64_t tick = 0;
  Prepared* pick = &slots[0];
  for (Prepared& slot : slots) {
    if (slot.serial == p.twin_serial) {
      pick = &slot;
      break;
    }
    if (slot.used < pick->used) pick = &slot;
  }
  Prepared& in = *pick;
  in.used = ++tick;
  const Steady outer = t_steady;
  const uint64_t steady = outer.x == x ? outer.id : 0;
  const size_t n = static_cast<size_t>(p.cols);
  const bool same = in.serial == p.twin_serial && in.source.size() == n &&
                    (steady != 0 ? in.steady == steady : std::memcmp(in.source.data(), x, n * sizeof(float)) == 0);
  if (!same) {
    in.serial = p.twin_serial;
    in.id = ++t_steady.last;  // x' changed: a number of its own for product_input's cache
    in.source.assign(x, x + p.cols);
    in.scaled.resize(n);
    in.constant = 0.0f;
    for (size_t c = 0; c < n; ++c) {
      in.scaled[c] = x[c] * p.column_factor[c];
      if (p.one_level[c]) in.constant += p.column_value[c] * x[c];
    }
    // Four interleaved partial sums: most columns share a level count, and one running sum in memory
    // waits for its own last store at every column. (One-level columns add their x' of 0.)
    const auto g4 = static_cast<size_t>(grids);
    in.sums.assign(4 * g4, 0.0f);
    size_t c = 0;
    for (; c + 4 <= n; c += 4)
      for (size_t k = 0; k < 4; ++k) in.sums[k * g4 + p.grid_index[c + k]] += in.scaled[c + k];
    for (; c < n; ++c) in.sums[p.grid_index[c]] += in.scaled[c];
    for (size_t g = 0; g < g4; ++g) in.sums[g] = (in.sums[g] + in.sums[g4 + g]) + (in.sums[2 * g4 + g] + in.sums[3 * g4 + g]);
  }
  in.steady = steady;
  const std::vector<float>& sums = in.sums;
  // x' is steady while `in` holds it: the planes kernel's input cache needs no comparison. (The
  // thread's count of numbers, `last`, moves on; the rest of the caller's state comes back.)
  t_steady = {in.scaled.data(), 1, 0, in.id, t_steady.last};
  planes_matvec_rows(in.scaled.data(), twin, r0, r1, out);
  t_steady = {outer.x, outer.count, outer.stride, outer.id, t_steady.last};
  const float constant = in.constant;
  for (int64_t r = r0; r < r1; ++r) {
    const float* range = twin.row_scale.data() + r * ng;
    const uint8_t* zero = p.row_zero.data() + r * grids;
    float shift = 0.0f;
    for (int64_t g = 0; g < ng; ++g) {
      float part = 0.0f;
      for (int64_t d = 0; d < nd; ++d) part += static_cast<float>(zero[g * nd + d]) * sums[static_cast<size_t>(g * nd + d)];
      shift += range[g] * part;
    }
    out[r] += constant - shift;
  }
}

}  // namespace baq
