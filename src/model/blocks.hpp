#pragma once
#include "baq/model.hpp"
#include "model/kernels.hpp"

namespace baq {

// Pre-norm Llama block: RMSNorm, rotary GQA attention, RMSNorm, SwiGLU MLP.
class LlamaBlock final : public Block {
 public:
  LlamaBlock(int index, const ModelConfig& config, const TensorSource& source,
             std::shared_ptr<const kernels::RopeTable> rope);
  void forward(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache) const override;
  std::vector<Linear*> linears() override { return {&q_, &k_, &v_, &o_, &gate_, &up_, &down_}; }
  std::vector<std::pair<std::string, const Tensor*>> tensors() const override;

 private:
  ModelConfig config_;
  std::shared_ptr<const kernels::RopeTable> rope_;
  Tensor attn_norm_, mlp_norm_;
  Linear q_, k_, v_, o_, gate_, up_, down_;
};

// Pre-norm OPT block: LayerNorm, biased MHA (no rotary), LayerNorm, ReLU MLP.
class OptBlock final : public Block {
 public:
  OptBlock(int index, const ModelConfig& config, const TensorSource& source, const std::string& prefix);
  void forward(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache) const override;
  std::vector<Linear*> linears() override { return {&q_, &k_, &v_, &o_, &fc1_, &fc2_}; }
  std::vector<std::pair<std::string, const Tensor*>> tensors() const override;

 private:
  ModelConfig config_;
  std::string prefix_;
  Tensor attn_norm_, attn_norm_bias_, mlp_norm_, mlp_norm_bias_;
  Linear q_, k_, v_, o_, fc1_, fc2_;
};

// Loads `name` from `source` and checks its shape, naming the tensor on mismatch.
Tensor load_checked(const TensorSource& source, const std::string& name, std::vector<int64_t> shape);
// A linear's weight: kept packed when the source stores it packed, else loaded as F32.
Linear load_linear(const TensorSource& source, const std::string& linear_name, const std::string& tensor,
                   int64_t out, int64_t in);

}  // namespace baq
