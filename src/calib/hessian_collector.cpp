#include "calib/hessian_collector.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "baq/tensor.hpp"

namespace baq {

void HessianCollector::observe(int block, const Linear& linear, const float* x, int64_t rows) {
  if (block != block_) return;
  // Another linear reading the buffer the last one read shares its Hessian; the same linear seeing
  // the same buffer again is the next batch (the head reads one buffer batch after batch).
  if (x == last_x_ && rows == last_rows_ && !last_name_.empty() && linear.name != last_name_) {
    alias_[linear.name] = last_name_;
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t cols = linear.in_features();
  if (const int64_t i = first_non_finite(x, rows * cols); i >= 0)
    fail("blocks.{}.{}: calibration activations hold a non-finite value (NaN/Inf) at row {}", block, linear.name, i / cols);
  Accumulator& a = acc_[linear.name];
  if (a.sum.empty()) {
    a.cols = cols;
    a.sum.assign(static_cast<size_t>(cols * cols), 0.0);
  }
  // XᵀX of the batch in F32 (BLAS), summed across batches in double. Wide inputs go in 2048-column
  // tiles so the F32 product never needs a cols² buffer of its own (14336² floats would be 0.8 GB);
  // a 2048-wide input is one ssyrk, which ran at 315 GFLOP/s where its 1024-wide quarters ran at 250.
  const int64_t tile = std::min(cols, kHessianTileColumns);
  batch_.resize(static_cast<size_t>(tile * tile));
  for (int64_t i0 = 0; i0 < cols; i0 += tile) {
    const int64_t ni = std::min(tile, cols - i0);
    for (int64_t j0 = i0; j0 < cols; j0 += tile) {
      const int64_t nj = std::min(tile, cols - j0);
      if (j0 == i0)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(ni), static_cast<int>(rows), 1.0f, x + i0,
                    static_cast<int>(cols), 0.0f, batch_.data(), static_cast<int>(tile));
      else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(ni), static_cast<int>(nj), static_cast<int>(rows),
                    1.0f, x + i0, static_cast<int>(cols), x + j0, static_cast<int>(cols), 0.0f, batch_.data(),
                    static_cast<int>(tile));
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < ni; ++i)
        for (int64_t j = j0 == i0 ? i : 0; j < nj; ++j) a.sum[(i0 + i) * cols + j0 + j] += batch_[i * tile + j];
    }
  }
  a.samples += rows;
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  last_x_ = x;
  last_rows_ = rows;
  last_name_ = linear.name;
}

void HessianCollector::reduce(const Ranks& ranks) {
  if (!ranks.distributed()) return;
  for (auto& [name, a] : acc_) {  // in name order: the same on every rank
    if (a.finished) fail("blocks.{}.{}: Hessian reduced after it was finished", block_, name);
    ranks.sum_in_rank_order(a.sum);
    double samples = static_cast<double>(a.samples);
    ranks.sum_in_rank_order({&samples, 1});
    a.samples = static_cast<int64_t>(samples);
  }
}

std::string HessianCollector::key(const std::string& linear_name) const {
  const auto alias = alias_.find(linear_name);
  return alias != alias_.end() ? alias->second : linear_name;
}

void HessianCollector::release(const std::string& linear_name) {
  const auto it = acc_.find(key(linear_name));
  if (it != acc_.end()) acc_.erase(it);
}

std::vector<double>& HessianCollector::finished(const std::string& linear_name) {
  const auto alias = alias_.find(linear_name);
  const std::string& key = alias != alias_.end() ? alias->second : linear_name;
  auto it = acc_.find(key);
  if (it == acc_.end()) fail("blocks.{}.{}: the forward pass never fed this linear", block_, linear_name);
  Accumulator& a = it->second;
  if (!a.finished) {
    // The upper triangle scaled and mirrored by 16 × 16 tiles on all threads: row by row, the mirrored
    // stores went a whole row apart and this took 2 % of a 1.1B-shape quantize run; a 64-wide tile's
    // stores touch 64 pages (5632 doubles a row), a 16-wide one's 16 (74 → 57 ms at 5632).
    const double scale = 2.0 / static_cast<double>(a.samples);
    const int64_t n = a.cols;
    double* h = a.sum.data();
    constexpr int64_t kTile = 16;
#pragma omp parallel for schedule(dynamic)
    for (int64_t i0 = 0; i0 < n; i0 += kTile)
      for (int64_t j0 = i0; j0 < n; j0 += kTile)
        for (int64_t i = i0; i < std::min(n, i0 + kTile); ++i)
          for (int64_t j = std::max(j0, i); j < std::min(n, j0 + kTile); ++j) {
            const double v = h[i * n + j] * scale;
            h[i * n + j] = v;
            h[j * n + i] = v;
          }
    a.finished = true;
  }
  return a.sum;
}

const std::vector<double>& HessianCollector::hessian(const std::string& linear_name) { return finished(linear_name); }

void HessianCollector::scale_input(const std::string& linear_name, std::span<const float> scale) {
  std::vector<double>& h = finished(linear_name);
  const auto cols = static_cast<int64_t>(scale.size());
  if (static_cast<int64_t>(h.size()) != cols * cols) fail("blocks.{}.{}: {} input scales for {} values", block_, linear_name, cols, h.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) h[i * cols + j] /= static_cast<double>(scale[i]) * static_cast<double>(scale[j]);
}

}  // namespace baq

