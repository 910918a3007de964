#pragma once
// Memory known before it is allocated: each command estimates its peak from the model's shapes and its
// settings, prints it, and stops with a one-line error naming what to change when the machine cannot
// hold it (rather than meeting the OOM killer halfway through an hour-long run).
//
// Two kinds of memory are kept apart: allocated memory (activations, Hessians, buffers), which must fit
// in what the machine has available, and mapped checkpoint pages, which the kernel reads in on demand
// and may drop again (they are reported, not checked).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace baq {

class Model;

struct MemoryEstimate {
  std::vector<std::pair<std::string, double>> allocated;  // bytes, by what holds them (at the peak)
  double mapped = 0;                                      // checkpoint bytes mapped and read at the peak
  double allocated_total() const;
  double peak() const { return allocated_total() + mapped; }
  std::string describe() const;  // "1.20 GiB (activations 0.30 GiB, Hessians 0.60 GiB, ...; mapped 0.44 GiB)"
};

// Bytes this process may still allocate: MemAvailable, or less when a cgroup limit is lower.
double available_memory();

// baq quantize: one block's mapped weights, the calibration residual stream, the forward's buffers
// for a batch of windows, the block's Hessians while they are accumulated, and the widest linear's
// solve (its Hessian, its Cholesky factor, its weights in F32 and their codes) beside the Hessians
// still waiting for their linears.
MemoryEstimate estimate_quantize_memory(const Model& model, int64_t nsamples, int seqlen, int batch_windows,
                                        bool bf16_activations, int threads);
// baq ppl: the mapped model (and reference), a batch's forward buffers, the logits of 256 positions.
MemoryEstimate estimate_eval_memory(const Model& model, const Model* reference, int seqlen, int threads);
// baq generate: the mapped model, the KV cache of a full context, one token's buffers.
MemoryEstimate estimate_generate_memory(const Model& model);

// Fails (one line naming `advice`) when the allocated part exceeds what is available.
void check_memory(const MemoryEstimate& estimate, const std::string& what, const std::string& advice);

// Process-wide: freed buffers stay with the allocator for the next block's same-sized ones, instead of
// going back to the kernel and being faulted in (and zeroed) again. Call once at start-up.
void retain_freed_memory();

// Process-wide: the heap in transparent huge pages where the kernel gives them on request. Starts the
// program again (same arguments, same process) with glibc's tunable set, unless the environment
// already sets it; call first thing in main, before any thread or MPI starts.
void use_huge_pages(char** argv);

}  // namespace baq
