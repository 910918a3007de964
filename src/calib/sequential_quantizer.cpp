#include <chrono>
#include <cmath>
#include <cstring>

#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "calib/hessian_collector.hpp"

namespace baq {

QuantMethod parse_method(const std::string& name) {
  if (name == "rtn") return QuantMethod::Rtn;
  if (name == "gptq") return QuantMethod::Gptq;
  fail("unknown quantization method '{}' (rtn or gptq)", name);
}

const char* method_name(QuantMethod method) { return method == QuantMethod::Rtn ? "rtn" : "gptq"; }

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

QuantizeRun quantize_model(Model& model, std::span<const int> calibration, int seqlen, const QuantizeOptions& options) {
  const auto t_start = std::chrono::steady_clock::now();
  const ModelConfig& cfg = model.config();
  if (seqlen < 2 || calibration.size() % static_cast<size_t>(seqlen) != 0)
    fail("calibration holds {} tokens, not whole windows of {}", calibration.size(), seqlen);
  const int nsamples = static_cast<int>(calibration.size() / static_cast<size_t>(seqlen));
  const int64_t dim = cfg.dim;
  const QuantSettings& s = options.settings;

  // The residual stream of every calibration window: the one activation buffer kept throughout.
  std::vector<float> x(calibration.size() * static_cast<size_t>(dim));
  model.embed(calibration, BatchShape{nsamples, seqlen}, x.data());

  QuantizeRun run;
  int total_layers = 0;
  for (int b = 0; b < model.n_blocks(); ++b) total_layers += static_cast<int>(model.block(b).linears().size());
  std::vector<float> scratch;
  const int per_batch = std::max(1, options.batch_windows);
  for (int b = 0; b < model.n_blocks(); ++b) {
    Block& block = model.block(b);
    // Pass 1: the unquantized block on a copy of each batch, only to observe its linears' inputs.
    HessianCollector collector(b);
    for (int w0 = 0; w0 < nsamples; w0 += per_batch) {
      const int nb = std::min(per_batch, nsamples - w0);
      const size_t off = static_cast<size_t>(w0) * seqlen * dim, len = static_cast<size_t>(nb) * seqlen * dim;
      scratch.assign(x.begin() + static_cast<std::ptrdiff_t>(off), x.begin() + static_cast<std::ptrdiff_t>(off + len));
      block.forward(scratch.data(), BatchShape{nb, seqlen}, &collector);
    }
    for (Linear* l : block.linears()) {
      const auto t0 = std::chrono::steady_clock::now();
      LayerRecord rec;
      rec.name = fmt::format("blocks.{}.{}", b, l->name);
      rec.rows = l->out_features();
      rec.cols = l->in_features();
      const std::vector<double>& h = collector.hessian(l->name);
      for (int64_t i = 0; i < rec.cols; ++i) rec.hessian_trace += h[i * rec.cols + i];
      const QuantizedMatrix q = options.method == QuantMethod::Rtn
                                    ? quantize_rtn(l->weight.data, rec.rows, rec.cols, s)
                                    : quantize_gptq(l->weight.data, rec.rows, rec.cols, h.data(), s, rec.name);
      rec.loss = q.loss;
      rec.damp = q.damp;
      rec.damp_retries = q.damp_retries;
      rec.n_groups = q.n_groups;
      rec.proxy_loss = proxy_loss(l->weight.data, q.dequant.data(), rec.rows, rec.cols, h.data());
      if (q.damp_retries > 0 && options.warn)
        options.warn(fmt::format("{}: Hessian not positive definite; damping raised to {:.3g} after {} retries",
                                 rec.name, q.damp, q.damp_retries));
      for (float v : q.dequant)
        if (!std::isfinite(v)) fail("{}: quantization produced a non-finite weight", rec.name);
      // The quantized weights replace the layer's own (a fresh buffer: the old one may be a file view).
      Tensor replaced = Tensor::zeros(l->weight.shape);
      std::memcpy(replaced.data, q.dequant.data(), q.dequant.size() * sizeof(float));
      l->weight = std::move(replaced);

      const int64_t weights = rec.rows * rec.cols, grids = rec.rows * q.n_groups;
      run.quantized_weights += weights;
      run.code_bits += static_cast<double>(weights) * s.bits;
      run.scale_bits += 16.0 * static_cast<double>(grids);
      run.zero_bits += s.sym ? 0.0 : static_cast<double>(s.bits) * static_cast<double>(grids);
      rec.seconds = seconds_since(t0);
      run.layers.push_back(rec);
      if (options.on_layer) options.on_layer(rec, static_cast<int>(run.layers.size()), total_layers);
    }
    // Pass 2: the quantized block produces the next block's inputs, in place.
    for (int w0 = 0; w0 < nsamples; w0 += per_batch) {
      const int nb = std::min(per_batch, nsamples - w0);
      block.forward(x.data() + static_cast<size_t>(w0) * seqlen * dim, BatchShape{nb, seqlen}, nullptr);
    }
  }
  run.seconds = seconds_since(t_start);
  return run;
}

}  // namespace baq
