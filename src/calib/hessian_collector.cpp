#include "calib/hessian_collector.hpp"

#include <cblas.h>

#include <cmath>

#include "baq/error.hpp"

namespace baq {

void HessianCollector::observe(int block, const Linear& linear, const float* x, int64_t rows) {
  if (block != block_) return;
  if (x == last_x_ && rows == last_rows_ && !last_name_.empty()) {
    alias_[linear.name] = last_name_;
    return;
  }
  const int64_t cols = linear.in_features();
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(x[i]))
      fail("blocks.{}.{}: calibration activations hold a non-finite value (NaN/Inf) at row {}", block, linear.name,
           i / cols);
  Accumulator& a = acc_[linear.name];
  if (a.sum.empty()) {
    a.cols = cols;
    a.sum.assign(static_cast<size_t>(cols * cols), 0.0);
  }
  // F32 syrk per batch (a few thousand rows), summed across batches in double.
  batch_.resize(static_cast<size_t>(cols * cols));
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(cols), static_cast<int>(rows), 1.0f, x,
              static_cast<int>(cols), 0.0f, batch_.data(), static_cast<int>(cols));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = i; j < cols; ++j) a.sum[i * cols + j] += batch_[i * cols + j];
  a.samples += rows;
  last_x_ = x;
  last_rows_ = rows;
  last_name_ = linear.name;
}

const std::vector<double>& HessianCollector::hessian(const std::string& linear_name) {
  const auto alias = alias_.find(linear_name);
  const std::string& key = alias != alias_.end() ? alias->second : linear_name;
  auto it = acc_.find(key);
  if (it == acc_.end()) fail("blocks.{}.{}: the forward pass never fed this linear", block_, linear_name);
  Accumulator& a = it->second;
  if (!a.finished) {
    const double scale = 2.0 / static_cast<double>(a.samples);
    for (int64_t i = 0; i < a.cols; ++i)
      for (int64_t j = i; j < a.cols; ++j) {
        a.sum[i * a.cols + j] *= scale;
        a.sum[j * a.cols + i] = a.sum[i * a.cols + j];
      }
    a.finished = true;
  }
  return a.sum;
}

}  // namespace baq
