#include "baq/memory.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "baq/blas.hpp"
#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "baq/model.hpp"

namespace baq {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kProcess = 64.0 * 1024 * 1024;  // the binary, its libraries, tokenizer tables

double stored_bytes(const Tensor& t) { return t.dtype == DType::Packed ? 0.0 : static_cast<double>(t.bytes()); }

double block_bytes(const Block& b) {
  double bytes = 0;
  for (const auto& [name, t] : b.tensors()) bytes += stored_bytes(*t);
  return bytes;
}

// The forward's buffers for `rows` positions of windows `seqlen` long (Scratch slots and per-thread
// attention scores and weight tiles).
double forward_buffers(const ModelConfig& c, double rows, int seqlen, int threads) {
  const double per_row = 2.0 * c.dim + 2.0 * c.q_dim() + 2.0 * c.kv_dim() + (c.fused_qkv ? c.q_dim() + 2.0 * c.kv_dim() : 0.0) +
                         (c.fused_gate_up ? 3.0 : 2.0) * c.hidden_dim + c.embed_dim;
  // Plus the converted weights' panel (matmul_converted_rows): at most the largest weight, the head's.
  const double panel = std::min(static_cast<double>(kConvertedPanelFloats),
                                static_cast<double>(std::max<int64_t>(c.vocab_size, c.hidden_dim)) * std::max(c.dim, c.embed_dim));
  return 4.0 * rows * per_row + 4.0 * threads * (static_cast<double>(seqlen) * seqlen + 64.0 * std::max(c.hidden_dim, c.dim)) +
         4.0 * panel;
}

std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / kGiB); }

}  // namespace

double MemoryEstimate::allocated_total() const {
  double total = 0;
  for (const auto& [what, bytes] : allocated) total += bytes;
  return total;
}

std::string MemoryEstimate::describe() const {
  std::string parts;
  for (const auto& [what, bytes] : allocated)
    if (bytes >= 1024 * 1024) parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", what, gib(bytes));
  return fmt::format("{} allocated ({}) + {} of mapped checkpoint", gib(allocated_total()), parts, gib(mapped));
}

double available_memory() {
  double available = 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit)
    if (key == "MemAvailable:") available = kb * 1024.0;
  // A cgroup v2 limit below the machine's memory is what counts.
  std::ifstream max_file("/sys/fs/cgroup/memory.max"), current_file("/sys/fs/cgroup/memory.current");
  std::string max_text;
  double current = 0;
  if (max_file >> max_text && max_text != "max" && current_file >> current) {
    const double limit = std::stod(max_text);
    available = available > 0 ? std::min(available, limit - current) : limit - current;
  }
  if (available <= 0) available = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  return available;
}

MemoryEstimate estimate_quantize_memory(const Model& model, int64_t nsamples, int seqlen, int batch_windows,
                                        bool bf16_activations, int threads) {
  const ModelConfig& c = model.config();
  MemoryEstimate e;
  const double positions = static_cast<double>(nsamples) * seqlen;
  const double batch_rows = static_cast<double>(std::min<int64_t>(batch_windows, nsamples)) * seqlen;
  // The widest block (they are alike, but a config may differ per layer in windows only).
  double block = 0, pass1 = 0, solve = 0;
  for (int b = 0; b < model.n_blocks(); ++b) {
    const Block& blk = model.block(b);
    block = std::max(block, block_bytes(blk));
    // Hessians: one per distinct input (linears fed the same buffer share one), in double.
    std::vector<Linear*> linears = const_cast<Block&>(blk).linears();
    std::vector<double> hessian(linears.size(), 0.0);
    std::vector<size_t> last_user(linears.size());
    double all_hessians = 0;
    for (size_t i = 0; i < linears.size(); ++i) {
      const double cols = static_cast<double>(linears[i]->in_features());
      const bool shares = i > 0 && linears[i - 1]->input == linears[i]->input;  // q/k/v, gate/up: one Hessian
      hessian[i] = shares ? 0.0 : 8.0 * cols * cols;
      all_hessians += hessian[i];
    }
    const double tile = static_cast<double>(kHessianTileColumns);
    pass1 = std::max(pass1, all_hessians + 4.0 * tile * tile);  // and the collector's F32 tile
    // Solving linear i: the Hessians not yet freed, its Cholesky factor (one more cols²·8), the weights
    // in F32 three times (input, transposed working copy, dequantized) and their codes and packing.
    double alive = all_hessians;
    for (size_t i = 0; i < linears.size(); ++i) {
      const double rows = static_cast<double>(linears[i]->out_features()), cols = static_cast<double>(linears[i]->in_features());
      solve = std::max(solve, alive + 8.0 * cols * cols + rows * cols * (3 * 4.0 + 1.0 + 1.0));
      // Freed after its last reader: the next linear with a Hessian of its own starts a new input.
      if (i + 1 < linears.size() && hessian[i + 1] > 0) {
        for (size_t k = i + 1; k-- > 0;)
          if (hessian[k] > 0) {
            alive -= hessian[k];
            hessian[k] = 0;
            break;
          }
      }
    }
  }
  e.allocated.emplace_back("process", kProcess);
  e.allocated.emplace_back("calibration activations", positions * c.dim * (bf16_activations ? 2.0 : 4.0) + 4.0 * positions);
  const double buffers = 4.0 * batch_rows * c.dim + forward_buffers(c, batch_rows, seqlen, threads);
  // The forward's buffers stay allocated during the solves unless released between blocks, which
  // quantize does for models whose buffers are large; count them at whichever stage peaks.
  e.allocated.emplace_back("forward buffers", buffers);
  e.allocated.emplace_back("Hessians and solve", std::max(pass1, solve));
  e.allocated.emplace_back("packed block", block / 2);
  // Mapped: one block's weights, the embedding rows the calibration touches.
  const double embed_row = static_cast<double>(model.embeddings().bytes()) / c.vocab_size;
  e.mapped = block + embed_row * std::min(static_cast<double>(c.vocab_size), positions);
  return e;
}

namespace {

// Packed tensors are held in memory (read from the .baq), not mapped: their codes and prepared
// grids — the blocks' linears, the head and the embedding table alike.
double packed_bytes(const Model& m) {
  double bytes = 0;
  for (const auto& [name, p] : m.packed_tensors()) bytes += p->held_bytes();
  return bytes;
}

}  // namespace

MemoryEstimate estimate_eval_memory(const Model& model, const Model* reference, int seqlen, int threads) {
  const ModelConfig& c = model.config();
  MemoryEstimate e;
  const double rows = std::max(1, 4096 / seqlen) * static_cast<double>(seqlen);
  e.allocated.emplace_back("process", kProcess);
  e.allocated.emplace_back("forward buffers", (reference != nullptr ? 2 : 1) * (4.0 * rows * c.dim + forward_buffers(c, rows, seqlen, threads)));
  e.allocated.emplace_back("logits", (reference != nullptr ? 2 : 1) * 4.0 * 256 * c.vocab_size);
  e.allocated.emplace_back("per-token statistics", 64.0 * rows * 64);
  for (const Model* m : {&model, reference})
    if (m != nullptr)
      for (const auto& [name, t] : m->tensors()) e.mapped += stored_bytes(*t);
  double packed = 0;
  for (const Model* m : {&model, reference})
    if (m != nullptr) packed += packed_bytes(*m);
  if (packed > 0) e.allocated.emplace_back("packed weights", packed);
  return e;
}

MemoryEstimate estimate_generate_memory(const Model& model) {
  const ModelConfig& c = model.config();
  MemoryEstimate e;
  e.allocated.emplace_back("process", kProcess);
  e.allocated.emplace_back("KV cache", 2.0 * 4.0 * c.n_layers * static_cast<double>(c.max_seq_len) * c.kv_dim());
  e.allocated.emplace_back("prompt buffers", forward_buffers(c, std::min(c.max_seq_len, 4096), std::min(c.max_seq_len, 4096), 1));
  for (const auto& [name, t] : model.tensors()) e.mapped += stored_bytes(*t);
  const double packed = packed_bytes(model);
  if (packed > 0) e.allocated.emplace_back("packed weights", packed);
  return e;
}

void check_memory(const MemoryEstimate& estimate, const std::string& what, const std::string& advice) {
  const double available = available_memory();
  if (estimate.allocated_total() > available)
    fail("{} needs about {} of memory but {} is available; {}", what, gib(estimate.allocated_total()), gib(available), advice);
}

}  // namespace baq
