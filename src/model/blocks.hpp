#pragma once
#include "baq/family.hpp"
#include "baq/model.hpp"
#include "model/kernels.hpp"

namespace baq {

// The one decoder block every family runs, shaped by its ModelConfig: norms (RMS, RMS(1 + w),
// LayerNorm; before or after the residual add; Gemma 2's second norm on each sub-block's output),
// attention (separate or fused q/k/v, biases, rotary or none, grouped KV heads, sliding window,
// score soft-cap) and MLP (gated SiLU/GELU, separate or fused gate/up, or plain fc1/fc2).
class TransformerBlock final : public Block {
 public:
  TransformerBlock(int index, const ModelConfig& config, const TensorSource& source,
                   std::shared_ptr<const kernels::RopeTable> rope);
  void forward(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache) const override;
  void forward_token(float* x, KvCache::Layer& cache, int pos, float* work) const override;
  size_t token_work_size() const override;
  std::vector<Linear*> linears() override;
  bool scale_norm_output(int input, std::vector<float>& scale) override;
  bool norm_output_scalable(int input) const override;
  std::vector<Tensor> smoothable_norms() const override;
  void restore_smoothable_norms(const std::vector<Tensor>& saved) override;
  std::vector<std::pair<std::string, const Tensor*>> tensors() const override;

 private:
  struct Norm {
    Tensor weight, bias;
    std::string name;  // the weight's tensor name
    bool present() const { return !weight.empty(); }
  };
  void apply_norm(const Norm& n, const float* x, int64_t rows, float* out) const;
  void attention(float* x, BatchShape shape, LinearObserver* observer, KvCache::Layer* cache, float* out) const;
  void mlp(const float* xn, int64_t rows, LinearObserver* observer, float* out) const;

  ModelConfig config_;
  std::shared_ptr<const kernels::RopeTable> rope_;
  Norm attn_norm_, post_attn_norm_, mlp_norm_, post_mlp_norm_;
  Linear q_, k_, v_, qkv_, o_, gate_, up_, gate_up_, down_;
};

// A norm's output channel c divided by scale[c]: its weight (and a LayerNorm's bias) rewritten in F32,
// each scale first adjusted (by under 0.4 %) so the new weight is a bfloat16 value.
void divide_norm_channels(NormKind kind, Tensor& weight, Tensor& bias, std::vector<float>& scale);

// A source's tensor `name` with its shape checked (naming the tensor on mismatch); `dtype_any` keeps
// the stored dtype, else it is converted to F32 (norms and biases, which are small).
Tensor load_checked(const TensorSource& source, const std::string& name, std::vector<int64_t> shape, bool keep_dtype);
// A linear of the model: packed when the source stores it packed, else a view of its stored weights;
// its bias when `bias`. `name` is the linear's name in the model ("attn.q"), `role`/`layer` locate it.
Linear load_linear(const TensorSource& source, const ModelConfig& c, const std::string& name, Role role, int layer,
                   int64_t out, int64_t in, bool bias);

}  // namespace baq
