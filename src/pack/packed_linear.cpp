#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>

#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/pack.hpp"
#include "pack/code_layouts.hpp"

namespace baq {

int64_t PackedLinear::group(int64_t col) const {
  if (!group_of.empty()) return group_of[static_cast<size_t>(col)];
  return group_size > 0 ? col / group_size : 0;
}

void PackedLinear::range(int64_t r, int64_t g, float& lo_out, float& hi_out) const {
  if (format->ranges == RangeKind::F16) {
    const size_t k = static_cast<size_t>(r * n_groups + g);
    lo_out = f16_to_f32(lo[k]);
    hi_out = f16_to_f32(hi[k]);
    return;
  }
  const size_t k = static_cast<size_t>(r * n_groups + g), s = static_cast<size_t>(r * n_super() + g / super_groups);
  lo_out = scaled8_value(f16_to_f32(lo[s]), qlo[k]);
  hi_out = scaled8_value(f16_to_f32(hi[s]), qhi[k]);
}

void PackedLinear::allocate_codes() {
  // 64 bytes of zeros past the last row: SIMD loads may read a little beyond a row's end.
  code_words.assign(static_cast<size_t>((code_bytes() + 64 + 7) / 8), 0);
}

PackedLinear pack_linear(const QuantizedMatrix& m, const QuantSettings& s) {
  PackedLinear p;
  p.rows = m.rows;
  p.cols = m.cols;
  p.n_groups = m.n_groups;
  p.group_size = s.group_size > 0 ? s.group_size : m.cols;
  p.sym = m.sym;
  p.levels = m.levels;
  for (int L : m.levels) p.uniform = p.uniform && L == m.levels.front();
  p.super_groups = m.ranges == RangeKind::Scaled8 ? m.super_groups : 1;
  if (m.ranges == RangeKind::F16) {
    for (float v : m.lo) p.lo.push_back(f32_to_f16(v));
    for (float v : m.hi) p.hi.push_back(f32_to_f16(v));
  } else {
    for (float v : m.super_lo) p.lo.push_back(f32_to_f16(v));
    for (float v : m.super_hi) p.hi.push_back(f32_to_f16(v));
    p.qlo = m.qlo;
    p.qhi = m.qhi;
  }
  for (int64_t j = 0; j < m.cols; ++j)
    if (m.levels[static_cast<size_t>(j)] == 1) p.means.push_back(f32_to_f16(m.column_mean[static_cast<size_t>(j)]));
  bool natural = true;
  for (int64_t j = 0; j < m.cols; ++j) natural = natural && m.group_of[static_cast<size_t>(j)] == j / p.group_size;
  if (!natural) p.group_of.assign(m.group_of.begin(), m.group_of.end());
  // The densest layout that holds the levels: planes for uniform power-of-two levels, else radix.
  const QuantFormat& planes = quant_format(m.ranges, CodeKind::Planes);
  p.format = planes.accepts(m.levels, natural) ? &planes : &quant_format(m.ranges, CodeKind::Radix);
  p.prepare();
  p.allocate_codes();
  // A layout's writer touches only the bytes that hold its row's bits, so rows that start on a byte
  // share none and are packed on all threads (one thread packing was 2 % of a quantize run's wall).
#pragma omp parallel for schedule(static) if (p.row_bits % 8 == 0 && m.rows > 1)
  for (int64_t r = 0; r < m.rows; ++r) p.format->pack_row(p, r, m.codes.data() + r * m.cols);
  p.prepare_fused();
  return p;
}

PackedLinear concat_rows(std::vector<PackedLinear> parts) {
  if (parts.empty()) fail("concat_rows: no parts");
  PackedLinear all = std::move(parts.front());
  if (parts.size() == 1) return all;
  int64_t rows = all.rows;
  for (size_t i = 1; i < parts.size(); ++i) {
    const PackedLinear& p = parts[i];
    // Column-wide fields (one-level means among them) are the same in every slice only when they
    // were fixed before the slices were solved; anything else is a caller error.
    if (p.cols != all.cols || p.format != all.format || p.levels != all.levels || p.n_groups != all.n_groups ||
        p.group_size != all.group_size || p.super_groups != all.super_groups || p.sym != all.sym ||
        p.group_of != all.group_of || p.means != all.means)
      fail("concat_rows: part {} was not packed like the first", i);
    rows += p.rows;
  }
  std::vector<uint64_t> first_codes = std::move(all.code_words);
  const int64_t first_rows = all.rows;
  all.rows = rows;
  all.allocate_codes();
  // Rows of a bit-granular layout need not end on a byte: each part's stream goes in at its bit.
  copy_bits(all.codes(), 0, reinterpret_cast<const uint8_t*>(first_codes.data()), 0, first_rows * all.row_bits);
  int64_t at = first_rows * all.row_bits;
  for (size_t i = 1; i < parts.size(); ++i) {
    const PackedLinear& p = parts[i];
    copy_bits(all.codes(), at, p.codes(), 0, p.rows * p.row_bits);
    at += p.rows * p.row_bits;
    all.lo.insert(all.lo.end(), p.lo.begin(), p.lo.end());
    all.hi.insert(all.hi.end(), p.hi.begin(), p.hi.end());
    all.qlo.insert(all.qlo.end(), p.qlo.begin(), p.qlo.end());
    all.qhi.insert(all.qhi.end(), p.qhi.begin(), p.qhi.end());
  }
  all.prepare();
  all.prepare_fused();
  return all;
}

StorageBits planned_storage(const std::vector<int>& levels, int64_t rows, const QuantSettings& s) {
  PackedLinear p;  // the column-wide layout only (no rows): what prepare() derives from the levels
  p.cols = static_cast<int64_t>(levels.size());
  p.group_size = s.group_size > 0 ? s.group_size : p.cols;
  p.n_groups = static_cast<int>((p.cols + p.group_size - 1) / p.group_size);
  p.super_groups = s.ranges == RangeKind::Scaled8 ? std::clamp(s.super_groups, 1, p.n_groups) : 1;
  p.levels = levels;
  int one_level = 0;
  for (int L : levels) {
    p.uniform = p.uniform && L == levels.front();
    one_level += L == 1;
  }
  p.means.assign(static_cast<size_t>(one_level), 0);
  const bool natural = !(s.act_order && s.group_size > 0);
  const QuantFormat& planes = quant_format(s.ranges, CodeKind::Planes);
  p.format = planes.accepts(levels, natural) ? &planes : &quant_format(s.ranges, CodeKind::Radix);
  p.prepare();
  StorageBits b;
  const auto r = static_cast<double>(rows);
  b.codes = 8.0 * static_cast<double>(code_stream_bytes(rows, p.row_bits));
  b.ranges = s.ranges == RangeKind::F16 ? 32.0 * r * p.n_groups : r * (16.0 * p.n_groups + 32.0 * p.n_super());
  b.widths = (p.uniform ? 0.0 : 8.0 * static_cast<double>(p.cols)) + (natural ? 0.0 : 32.0 * static_cast<double>(p.cols));
  b.means = 16.0 * one_level;
  return b;
}

QuantSettings uniform_settings_for_bpw(double bpw, int64_t rows, int64_t cols, const QuantSettings& base) {
  if (const auto s = uniform_settings_within(bpw, rows, cols, base)) return *s;
  fail("{} stored bits per weight is below what 2-bit codes with one range per row need for a {}x{} matrix", bpw, rows, cols);
}

std::optional<QuantSettings> uniform_settings_within(double bpw, int64_t rows, int64_t cols, const QuantSettings& base) {
  const double weights = static_cast<double>(rows) * static_cast<double>(cols);
  std::vector<std::pair<RangeKind, int>> grids = {{RangeKind::F16, 0}};  // one range per row
  for (int group : {256, 128, 64, 32, 16})
    if (group < cols) {
      grids.emplace_back(RangeKind::F16, group);
      grids.emplace_back(RangeKind::Scaled8, group);
    }
  QuantSettings best = base;
  int best_bits = 0;
  double best_stored = 0;
  for (int bits = 2; bits <= 8; ++bits)
    for (const auto& [ranges, group] : grids) {
      QuantSettings s = base;
      s.bits = bits;
      s.ranges = ranges;
      s.group_size = group;
      s.act_order = false;
      const double stored = planned_storage(std::vector<int>(static_cast<size_t>(cols), 1 << bits), rows, s).total() / weights;
      if (stored > bpw + 1e-12) continue;
      // More code bits first; at equal bits, the finer grid the budget pays for.
      if (bits > best_bits || (bits == best_bits && stored > best_stored)) {
        best = s;
        best_bits = bits;
        best_stored = stored;
      }
    }
  if (best_bits == 0) return std::nullopt;
  return best;
}

StorageBits storage_bits(const PackedLinear& p) {
  StorageBits b;
  b.codes = 8.0 * static_cast<double>(p.code_bytes());
  b.ranges = 16.0 * static_cast<double>(p.lo.size() + p.hi.size()) + 8.0 * static_cast<double>(p.qlo.size() + p.qhi.size());
  b.widths = (p.uniform ? 0.0 : 8.0 * static_cast<double>(p.cols)) + 32.0 * static_cast<double>(p.group_of.size());
  b.means = 16.0 * static_cast<double>(p.means.size());
  return b;
}

void PackedLinear::prepare() {
  if (format == nullptr) fail("packed linear without a format");
  if (format->codes == CodeKind::Radix) {
    layout = RowRadixLayout(levels);
    plane_bits.clear();
  } else {
    int b = 0;
    while ((1 << b) < levels.front()) ++b;
    plane_bits = plane_widths(b);
    layout = RowRadixLayout();
  }
  row_bits = format->row_bits(*this);
  distinct_levels.clear();
  std::vector<uint32_t> level_index(levels.size(), 0);
  column_value.assign(levels.size(), 0.0f);
  one_level.assign(levels.size(), 0);
  std::vector<int> index_of(257, -1);
  for (size_t j = 0, k = 0; j < levels.size(); ++j) {
    const int L = levels[j];
    if (L < 1 || L > 256) fail("packed linear: column {} has level count {} outside 1..256", j, L);
    if (index_of[static_cast<size_t>(L)] < 0) {
      index_of[static_cast<size_t>(L)] = static_cast<int>(distinct_levels.size());
      distinct_levels.push_back(L);
    }
    level_index[j] = static_cast<uint32_t>(index_of[static_cast<size_t>(L)]);
    if (L == 1) {
      column_value[j] = f16_to_f32(means[k++]);
      one_level[j] = 1;
    }
  }
  row_scale.clear();
  row_zero.clear();
  const int64_t grids = n_groups * static_cast<int64_t>(distinct_levels.size());
  const bool planes = format->codes == CodeKind::Planes;
  if (!levels.empty() && (planes || 5 * grids <= row_bits / 8)) {
    row_scale.resize(static_cast<size_t>(rows * grids));
    row_zero.resize(row_scale.size());
    std::vector<float> scale(static_cast<size_t>(grids)), zero(scale.size());
    for (int64_t r = 0; r < rows; ++r) {
      fit_row_grids(*this, r, scale.data(), zero.data());
      for (int64_t g = 0; g < grids; ++g) {
        const float z = zero[static_cast<size_t>(g)];
        if (!(z >= 0.0f && z <= 255.0f && z == std::nearbyint(z)))
          fail("packed linear: row {} grid {} has a zero {} that is not a level index", r, g, z);
        row_scale[static_cast<size_t>(r * grids + g)] = scale[static_cast<size_t>(g)];
        row_zero[static_cast<size_t>(r * grids + g)] = static_cast<uint8_t>(z);
      }
    }
  }
  grid_index.resize(levels.size());
  for (size_t j = 0; j < levels.size(); ++j)
    grid_index[j] = static_cast<uint32_t>(group(static_cast<int64_t>(j))) * static_cast<uint32_t>(distinct_levels.size()) + level_index[j];
}

void PackedLinear::prepare_fused() {
  planes_twin.reset();
  column_factor.clear();
  const int64_t gs = group_size > 0 ? group_size : cols, nd = static_cast<int64_t>(distinct_levels.size()), grids = n_groups * nd;
  // The twin's zero terms cost a row `grids` multiply-adds beside its `cols` products.
  if (!radix_twins() || format == nullptr || format->codes != CodeKind::Radix || kernel_isa() != KernelIsa::Avx512Vnni ||
      !group_of.empty() || (n_groups > 1 && gs % 64 != 0) || cols < 128 || rows == 0 ||
      row_scale.size() != static_cast<size_t>(rows * grids) || 16 * grids > cols)
    return;
  int top = 1;
  for (int L : levels) top = std::max(top, L);
  int64_t with_range = -1;  // a level count of 2 or more: its grids give each (row, group)'s range
  for (int64_t d = 0; d < nd; ++d)
    if (distinct_levels[static_cast<size_t>(d)] >= 2) with_range = d;
  if (with_range < 0) return;
  int b = 1;
  while ((1 << b) < top) ++b;
  auto t = std::make_shared<PackedLinear>();
  t->rows = rows;
  t->cols = cols;
  t->n_groups = n_groups;
  t->group_size = gs;
  t->format = &quant_format(RangeKind::F16, CodeKind::Planes);
  t->levels.assign(static_cast<size_t>(cols), 1 << b);
  t->plane_bits = plane_widths(b);
  t->row_bits = t->format->row_bits(*t);
  t->allocate_codes();
  t->row_scale.resize(static_cast<size_t>(rows * n_groups));
  t->row_zero.assign(t->row_scale.size(), 0);
  const float steps = static_cast<float>(distinct_levels[static_cast<size_t>(with_range)] - 1);
#pragma omp parallel
  {
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      format->unpack_row(*this, r, codes.data());
      for (int64_t j = 0; j < cols; ++j)
        if (one_level[static_cast<size_t>(j)]) codes[static_cast<size_t>(j)] = 0;
      t->format->pack_row(*t, r, codes.data());
      for (int64_t g = 0; g < n_groups; ++g)
        t->row_scale[static_cast<size_t>(r * n_groups + g)] = row_scale[static_cast<size_t>(r * grids + g * nd + with_range)] * steps;
    }
  }
  column_factor.resize(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) {
    const int L = levels[static_cast<size_t>(j)];
    column_factor[static_cast<size_t>(j)] = L >= 2 ? 1.0f / static_cast<float>(L - 1) : 0.0f;
  }
  static std::atomic<uint64_t> serials{0};
  twin_serial = ++serials;
  planes_twin = std::move(t);
}

Tensor dequantize(const PackedLinear& p) {
  // The reference decoder: one grid fit per weight, straight from the stored fields.
  Tensor t = Tensor::zeros({p.rows, p.cols});
  std::vector<float> means(static_cast<size_t>(p.cols), 0.0f);
  for (int64_t j = 0, k = 0; j < p.cols; ++j)
    if (p.levels[static_cast<size_t>(j)] == 1) means[static_cast<size_t>(j)] = f16_to_f32(p.means[static_cast<size_t>(k++)]);
#pragma omp parallel
  {
    std::vector<uint8_t> codes(static_cast<size_t>(p.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
      p.format->unpack_row(p, r, codes.data());
      for (int64_t j = 0; j < p.cols; ++j) {
        const int L = p.levels[static_cast<size_t>(j)];
        float v = means[static_cast<size_t>(j)];
        if (L > 1) {
          float lo, hi;
          p.range(r, p.group(j), lo, hi);
          v = fit_grid(lo, hi, L - 1, p.sym).value(codes[static_cast<size_t>(j)]);
        }
        t.data[r * p.cols + j] = v;
      }
    }
  }
  return t;
}

}  // namespace baq
