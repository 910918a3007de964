#pragma once
// Sequential post-training quantization of every linear layer inside the transformer blocks, the
// GPTQ protocol: run block b on the calibration activations while accumulating each linear's
// H = 2·XᵀX/n, quantize the block's linears, re-run the quantized block to produce block b+1's
// inputs. Peak memory is one block plus the activations.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "baq/model.hpp"
#include "baq/pack.hpp"
#include "baq/quant.hpp"

namespace baq {

enum class QuantMethod { Rtn, Gptq, Baq };
// Where BAQ's budget applies: each layer on its own, or pooled over every quantized layer.
enum class Allocation { Layer, Model };
Allocation parse_allocation(const std::string& name);
QuantMethod parse_method(const std::string& name);
const char* method_name(QuantMethod method);

// The calibration forward's Hessians are formed as XᵀX of each batch in F32 tiles of at most this
// many input columns (a buffer of its square), summed in double; the memory estimate counts the tile.
constexpr int64_t kHessianTileColumns = 2048;

// `nsamples` windows of `seqlen` tokens at random starts (seeded), as GPTQ samples its calibration set.
std::vector<int> sample_calibration_windows(std::span<const int> tokens, int nsamples, int seqlen, uint64_t seed);

struct LayerRecord {
  std::string name;  // "blocks.3.mlp.down"
  int64_t rows = 0, cols = 0;
  double hessian_trace = 0.0;
  double loss = 0.0;        // GPTQ's Σ_j ℓ_j (0 for RTN)
  double proxy_loss = 0.0;  // tr((W−Q) H (W−Q)ᵀ) with the undamped H
  double damp = 0.0;
  int damp_retries = 0;
  int n_groups = 1;
  QuantSettings settings;        // what this layer was solved and packed with (a --bpw budget picks them per layer)
  double bits = 0.0;             // mean code bits per weight, Σ_j log2 L_j / cols
  StorageBits storage;           // every stored bit of this layer
  double loss_before = 0.0;      // BAQ: Σ ℓ_j of the uniform measurement pass
  double predicted_loss_ratio = 1.0;  // BAQ: modelled loss after / before allocation
  double measured_loss_ratio = 1.0;   // BAQ: GPTQ's loss after allocation over uniform's at the same budget
  bool baq_fell_back = false;         // BAQ: kept uniform GPTQ at the same stored bits (lower proxy loss)
  std::map<int, int> level_histogram;  // level count -> columns
  std::vector<int> levels;             // per column (BAQ's allocation; uniform for RTN/GPTQ)
  // BAQ model-wide: the measured sensitivity (KL divergence of the model's output per unit of this
  // layer's GPTQ loss, from quantizing it alone at the uniform rate) that weighs its columns.
  double sensitivity = 0.0;
  // Outlier smoothing of this layer's input: the strength α of s_c = (rms_c/geomean)^α (0: none).
  double input_smoothing = 0.0;
  // BAQ model-wide, measurement pass: c_j in the layer's own loss units (not reported).
  std::vector<double> column_coefficients;
  double seconds = 0.0;
};

struct QuantizeOptions {
  QuantMethod method = QuantMethod::Gptq;
  QuantSettings settings;     // settings.bits: RTN/GPTQ code bits
  double rate = 0.0;          // BAQ: mean code bits per weight (fractional allowed)
  // When > 0, the budget of every block linear in stored bits per weight (codes with their packing,
  // ranges, widths — everything): RTN/GPTQ pick bits and grid per layer to fit, BAQ allocates to it.
  double bpw = 0.0;
  // BAQ under a stored budget: a layer whose allocation does not beat uniform GPTQ at the same stored
  // bits on the calibration proxy loss keeps the uniform result.
  bool baq_fallback = true;
  Allocation allocation = Allocation::Layer;
  // Outside the blocks, each at its own settings (unset: kept as stored). The head is solved with
  // GPTQ on the Hessian of its input (the final-norm output) whatever the method; a token embedding
  // is a lookup table with no Hessian, rounded per row (RTN). A tied embedding is the quantized head.
  std::optional<QuantSettings> head, embeddings;
  // Before a block's linears are solved, each input a norm produces may be smoothed: the norm divided
  // and the weight columns multiplied per channel (function-preserving), with the strength the
  // calibration proxy loss prefers, none included (src/calib/outlier_smoothing.hpp).
  bool smooth_outliers = true;
  int batch_windows = 8;  // calibration windows per forward
  // BAQ model-wide: calibration tokens the per-layer sensitivities are measured on (one forward of
  // the blocks from the layer's own per block linear).
  int sensitivity_tokens = 512;
  // BAQ model-wide: its result is kept when the model's output KL divergence on the check tokens is at
  // most this fraction of the better other candidate's (per layer, uniform GPTQ).
  double model_wide_margin = 0.9;
  bool bf16_activations = false;  // hold the calibration residual stream in BF16 (half the memory)
  bool release_scratch = false;   // free the forward's per-thread buffers after every block
  std::function<void(const LayerRecord&, int done, int total)> on_layer;
  std::function<void(const std::string&)> warn;
  // Called once a block is quantized for good (its linears packed, its outputs computed): a writer
  // streams it out here and may release it, so the model is never held quantized whole.
  std::function<void(int block, Block& b)> on_block;
};

// Seconds per stage of a quantization run (summed over blocks), of one rank.
struct StageSeconds {
  double forward = 0;    // calibration windows through the blocks (both passes), embedding included
  double hessian = 0;    // accumulating H = 2·XᵀX/n
  double reduce = 0;     // MPI: summing the ranks' partial Hessians
  double solve = 0;      // GPTQ/BAQ per linear, proxy losses included
  double pack = 0;       // packing codes into their format
  double broadcast = 0;  // MPI: receiving the linears other ranks solved (waiting for them included)
  double write = 0;      // streaming finished blocks to the output
  double total() const { return forward + hessian + reduce + solve + pack + broadcast + write; }
  StageSeconds& operator+=(const StageSeconds& o) {
    forward += o.forward, hessian += o.hessian, reduce += o.reduce, solve += o.solve, pack += o.pack;
    broadcast += o.broadcast, write += o.write;
    return *this;
  }
};

struct QuantizeRun {
  std::vector<LayerRecord> layers;
  StageSeconds stages;
  int64_t quantized_weights = 0;
  StorageBits bits;  // summed over layers
  double bits_per_weight() const { return bits.total() / static_cast<double>(quantized_weights); }
  double code_bits_per_weight() const { return bits.codes / static_cast<double>(quantized_weights); }
  double seconds = 0.0;
  // Every rank's share, in rank order (one entry for a plain run).
  struct RankShare {
    int64_t windows = 0;
    StageSeconds stages;
  };
  std::vector<RankShare> ranks;
  // BAQ under --bpw (or --alloc model): the model's output KL divergence on the check tokens quantized
  // model-wide, per layer and with uniform GPTQ at the same stored bits (−1: not a candidate), and
  // which the final pass used ("model", "layer" or "uniform").
  struct AllocationCheck {
    double model_wide_kld = -1, per_layer_kld = -1, uniform_kld = -1;
    int64_t tokens = 0;
    std::string chosen;
  };
  std::optional<AllocationCheck> allocation_check;
};

// The calibration tokens BAQ --alloc model checks its allocation on: 4 × the sensitivity tokens, at
// most what keeps the reference's log-probabilities within 256 MiB, never fewer than the sensitivity
// tokens.
int model_wide_check_tokens(int sensitivity_tokens, int64_t vocab);

// Writes a quantized model as one .baq file: every quantized linear packed, every other tensor as
// stored (BF16 when lossless), the tokenizer files embedded, `metadata` (quantization settings, report
// summary) beside the config.
void save_baq(const std::string& path, const Model& model, const Tokenizer* tokenizer, const nlohmann::json& metadata);

// Streams a .baq: the model's outer tensors first, then each block as the quantizer finishes it
// (QuantizeOptions::on_block = [&](int, Block& b) { out.add_block(b); }), then finish(). A block
// written is released (its packed linears and mapped pages), so memory holds one block.
class BaqModelWriter {
 public:
  BaqModelWriter(const std::string& path, const Model& model);
  ~BaqModelWriter();
  void add_block(Block& block);
  void finish(const Model& model, const Tokenizer* tokenizer, const nlohmann::json& metadata);

 private:
  std::unique_ptr<class BaqFileWriter> writer_;
  std::set<std::string> written_;
};

// The calibration windows one rank of an MPI run processes: a contiguous run of whole batches of
// `batch_windows` windows, so every batch, and the Hessian sums it feeds, is the batch a single process
// forms. With fewer batches than ranks the batches shrink so every rank gets windows (the sums then
// differ from one process's in rounding); fewer windows than ranks is a CollectiveError.
struct WindowShare {
  int64_t first = 0, count = 0;
  int batch = 1;  // windows per forward
};
WindowShare window_share(int64_t windows, int batch_windows, int rank, int ranks);

// Quantizes `model`'s block linears in place: each becomes packed (Linear::packed).
// `calibration` holds nsamples·seqlen token ids, window after window.
// Under MPI (Ranks::world() of several ranks; every rank calls this with the same model, calibration
// and options): each rank runs its contiguous share of the windows and accumulates partial Hessians,
// summed in rank order; a block's linears are solved on different ranks and broadcast, so every rank
// ends with the same quantized model. One rank gives exactly a plain run's result.
QuantizeRun quantize_model(Model& model, std::span<const int> calibration, int seqlen, const QuantizeOptions& options);

}  // namespace baq
