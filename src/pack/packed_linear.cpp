#include "baq/error.hpp"
#include "baq/half.hpp"
#include "baq/pack.hpp"

namespace baq {

int64_t PackedLinear::group(int64_t col) const {
  if (!group_of.empty()) return group_of[static_cast<size_t>(col)];
  return group_size > 0 ? col / group_size : 0;
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
  for (float v : m.lo) p.lo.push_back(f32_to_f16(v));
  for (float v : m.hi) p.hi.push_back(f32_to_f16(v));
  for (int64_t j = 0; j < m.cols; ++j)
    if (m.levels[static_cast<size_t>(j)] == 1) p.means.push_back(f32_to_f16(m.column_mean[static_cast<size_t>(j)]));
  bool natural = true;
  for (int64_t j = 0; j < m.cols; ++j) natural = natural && m.group_of[static_cast<size_t>(j)] == j / p.group_size;
  if (!natural) p.group_of.assign(m.group_of.begin(), m.group_of.end());
  p.prepare();
  const int64_t words = p.layout.words_per_row();
  p.codes.resize(static_cast<size_t>(m.rows * words));
  for (int64_t r = 0; r < m.rows; ++r) p.layout.pack_row(m.codes.data() + r * m.cols, p.codes.data() + r * words);
  return p;
}

StorageBits storage_bits(const PackedLinear& p) {
  StorageBits b;
  b.codes = 64.0 * static_cast<double>(p.codes.size());
  b.ranges = 16.0 * static_cast<double>(p.lo.size() + p.hi.size());
  b.widths = (p.uniform ? 0.0 : 8.0 * static_cast<double>(p.cols)) + 32.0 * static_cast<double>(p.group_of.size());
  b.means = 16.0 * static_cast<double>(p.means.size());
  return b;
}

void PackedLinear::prepare() {
  layout = RowRadixLayout(levels);
  distinct_levels.clear();
  std::vector<uint32_t> level_index(levels.size(), 0);
  column_value.assign(levels.size(), 0.0f);
  one_level.assign(levels.size(), 0);
  std::vector<int> index_of(257, -1);
  for (size_t j = 0, k = 0; j < levels.size(); ++j) {
    const int L = levels[j];
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
  grid_index.resize(levels.size());
  for (size_t j = 0; j < levels.size(); ++j)
    grid_index[j] = static_cast<uint32_t>(group(static_cast<int64_t>(j))) * static_cast<uint32_t>(distinct_levels.size()) + level_index[j];
}

Tensor dequantize(const PackedLinear& p) {
  // The reference decoder: one grid fit per weight, straight from the stored fields.
  Tensor t = Tensor::zeros({p.rows, p.cols});
  const RowRadixLayout layout(p.levels);
  const int64_t words = layout.words_per_row();
  std::vector<float> means(static_cast<size_t>(p.cols), 0.0f);
  for (int64_t j = 0, k = 0; j < p.cols; ++j)
    if (p.levels[static_cast<size_t>(j)] == 1) means[static_cast<size_t>(j)] = f16_to_f32(p.means[static_cast<size_t>(k++)]);
#pragma omp parallel
  {
    std::vector<uint8_t> codes(static_cast<size_t>(p.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
      layout.unpack_row(p.codes.data() + r * words, codes.data());
      for (int64_t j = 0; j < p.cols; ++j) {
        const int L = p.levels[static_cast<size_t>(j)];
        float v = means[static_cast<size_t>(j)];
        if (L > 1) {
          const size_t k = static_cast<size_t>(r * p.n_groups + p.group(j));
          v = fit_grid(f16_to_f32(p.lo[k]), f16_to_f32(p.hi[k]), L - 1, p.sym).value(codes[static_cast<size_t>(j)]);
        }
        t.data[r * p.cols + j] = v;
      }
    }
  }
  return t;
}

}  // namespace baq
