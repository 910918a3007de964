#include "baq/tensor.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace baq {

Tensor Tensor::zeros(std::vector<int64_t> shape) {
  Tensor t;
  t.shape = std::move(shape);
  auto storage = std::make_shared<std::vector<float>>(static_cast<size_t>(t.numel()), 0.0f);
  t.data = storage->data();
  t.owner = storage;
  return t;
}

Tensor Tensor::view(std::vector<int64_t> shape, float* data, std::shared_ptr<void> owner) {
  Tensor t;
  t.shape = std::move(shape);
  t.data = data;
  t.owner = std::move(owner);
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Tensor::shape_string() const { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace baq
