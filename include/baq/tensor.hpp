#pragma once
// A dense F32 tensor that either owns its storage or views memory owned by someone else (a mapped
// checkpoint file), so F32 checkpoints are used in place without a copy.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace baq {

struct Tensor {
  std::vector<int64_t> shape;
  float* data = nullptr;
  std::shared_ptr<void> owner;  // keeps the storage (a vector or a mapping) alive

  static Tensor zeros(std::vector<int64_t> shape);
  static Tensor view(std::vector<int64_t> shape, float* data, std::shared_ptr<void> owner);

  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const { return shape.empty() ? 1 : numel() / rows(); }
  bool empty() const { return data == nullptr; }
  std::span<float> span() { return {data, static_cast<size_t>(numel())}; }
  std::span<const float> span() const { return {data, static_cast<size_t>(numel())}; }
  std::string shape_string() const;
};

}  // namespace baq
