#pragma once
#include <map>
#include <span>
#include <string>
#include <vector>

#include "baq/model.hpp"
#include "baq/ranks.hpp"

namespace baq {

// Accumulates H = 2·XᵀX/n for every linear of one block from the inputs the forward pass shows it.
// Linears fed the very same input buffer one after the other (q/k/v, gate/up) share one Hessian.
class HessianCollector final : public LinearObserver {
 public:
  explicit HessianCollector(int block) : block_(block) {}
  void observe(int block, const Linear& linear, const float* x, int64_t rows) override;
  // The caller discards the block's output: `last` (the block's last linear) need not be computed.
  void skip_output_of(const Linear* last) { skip_ = last; }
  bool output_needed(int block, const Linear& linear) const override { return block != block_ || &linear != skip_; }
  // The finished Hessian of `linear_name` (cols × cols, row-major, symmetric).
  const std::vector<double>& hessian(const std::string& linear_name);
  // The finished Hessian of the linears reading `linear_name`'s input once that input is divided by
  // `scale` per channel: H_ij / (s_i·s_j).
  void scale_input(const std::string& linear_name, std::span<const float> scale);
  // Which accumulator a linear reads (linears fed one input share one).
  std::string key(const std::string& linear_name) const;
  // Under MPI, before the first hessian(): every rank's partial sums and sample counts summed in rank
  // order, the same totals on every rank. A job of one leaves them as they are.
  void reduce(const Ranks& ranks);
  // Frees a Hessian once the last linear that reads it is quantized.
  void release(const std::string& linear_name);
  // Seconds spent accumulating so far.
  double seconds() const { return seconds_; }

 private:
  std::vector<double>& finished(const std::string& linear_name);
  struct Accumulator {
    int64_t cols = 0;
    int64_t samples = 0;
    std::vector<double> sum;  // upper triangle of Σ XᵀX
    bool finished = false;
  };
  int block_;
  const Linear* skip_ = nullptr;
  std::map<std::string, Accumulator> acc_;
  std::map<std::string, std::string> alias_;
  const float* last_x_ = nullptr;
  int64_t last_rows_ = 0;
  std::string last_name_;
  std::vector<float> batch_;
  double seconds_ = 0;
};

}  // namespace baq
