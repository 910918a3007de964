// The scale bench: random-weight BF16 checkpoints of real shapes (TinyLlama-1.1B, Llama-3-8B), written
// here, and the baq binary run on them as a user would, each command a child process measured for
// wall time and peak RSS:
//   info      — seconds and peak RSS (headers only: < 1 s and < 100 MB on the 8B shape);
//   quantize  — peak RSS beside baq's own estimate, seconds per stage, and the FLOPs of the calibration
//               forward and the solves against the sgemm rate measured in the same run;
//   generate  — tokens/s of the original and of .baq files at 2, 3 and 4 bits against the bound of
//               reading the weights once per token at the stream bandwidth measured in the same run.
// And kdoc-6.8M (../shared), where per-token overhead dominates: tokens/s with 1 and 2 threads.
//
//   mpi       — with --mpi N: the same quantize under `mpirun -np 1` and `-np N` on this host (the cores
//               shared among the ranks), the speed-up, and each rank's time in the reduce and broadcast.
//
//   bench_scale [--shapes tinyllama,llama3-8b,kdoc] [--dir /tmp/baq-scale] [--nsamples 8] [--seqlen 512]
//               [--skip-generate] [--keep] [--reuse] [--mpi N]
// --reuse takes the .baq files a --keep run left in --dir instead of quantizing again (generation only).
#include <algorithm>
#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "baq/blas.hpp"
#include "machine_bounds.hpp"

namespace fs = std::filesystem;
using baq::bench::sgemm_rate;
using baq::bench::stream_bandwidth;

namespace {

struct Shape {
  std::string name;
  int dim, ffn, layers, heads, kv_heads, vocab, context;
  double theta;
};

const std::vector<Shape> kShapes = {
    {"tinyllama", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0},
    {"llama3-8b", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0},
};

struct Run {
  int status = -1;
  double seconds = 0, peak_mib = 0;
  std::string output;
};

// Runs a command (argv) as a child with its output captured; its own peak RSS from wait4.
Run run(const std::vector<std::string>& argv) {
  int pipe_fd[2];
  if (::pipe(pipe_fd) != 0) throw std::runtime_error("pipe");
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipe_fd[1], 1);
    ::dup2(pipe_fd[1], 2);
    ::close(pipe_fd[0]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());  // a path, or a program on PATH (mpirun)
    _exit(127);
  }
  ::close(pipe_fd[1]);
  Run r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipe_fd[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<size_t>(n));
  ::close(pipe_fd[0]);
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.peak_mib = static_cast<double>(usage.ru_maxrss) / 1024.0;
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

double number_after(const std::string& text, const std::string& pattern) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(pattern))) return NAN;
  return std::stod(m[1]);
}

uint16_t bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

// Writes config.json, model.safetensors (BF16, N(0, 0.02)-like values from a fast generator) and a
// llama2.c tokenizer.bin of the vocabulary (bytes and filler pieces) into `dir`.
void write_checkpoint(const Shape& s, const fs::path& dir) {
  fs::create_directories(dir);
  const int hd = s.dim / s.heads, kv = s.kv_heads * hd;
  nlohmann::ordered_json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                                   {"hidden_size", s.dim}, {"intermediate_size", s.ffn}, {"num_hidden_layers", s.layers},
                                   {"num_attention_heads", s.heads}, {"num_key_value_heads", s.kv_heads},
                                   {"vocab_size", s.vocab}, {"max_position_embeddings", s.context},
                                   {"rms_norm_eps", 1e-5}, {"rope_theta", s.theta}, {"hidden_act", "silu"},
                                   {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2},
                                   {"torch_dtype", "bfloat16"}};
  std::ofstream(dir / "config.json") << config.dump(2);
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors = {{"model.embed_tokens.weight", {s.vocab, s.dim}}};
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    tensors.push_back({p + "input_layernorm.weight", {s.dim}});
    tensors.push_back({p + "self_attn.q_proj.weight", {s.dim, s.dim}});
    tensors.push_back({p + "self_attn.k_proj.weight", {kv, s.dim}});
    tensors.push_back({p + "self_attn.v_proj.weight", {kv, s.dim}});
    tensors.push_back({p + "self_attn.o_proj.weight", {s.dim, s.dim}});
    tensors.push_back({p + "post_attention_layernorm.weight", {s.dim}});
    tensors.push_back({p + "mlp.gate_proj.weight", {s.ffn, s.dim}});
    tensors.push_back({p + "mlp.up_proj.weight", {s.ffn, s.dim}});
    tensors.push_back({p + "mlp.down_proj.weight", {s.dim, s.ffn}});
  }
  tensors.push_back({"model.norm.weight", {s.dim}});
  tensors.push_back({"lm_head.weight", {s.vocab, s.dim}});
  nlohmann::ordered_json header;
  uint64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    header[name] = {{"dtype", "BF16"}, {"shape", shape}, {"data_offsets", {offset, offset + 2 * n}}};
    offset += 2 * n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  const uint64_t len = text.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  uint64_t state = 0x9E3779B97F4A7C15ull;
  std::vector<uint16_t> chunk(1 << 22);
  for (const auto& [name, shape] : tensors) {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    const bool norm = shape.size() == 1;
    const float scale = norm ? 0.0f : (name.find("embed") != std::string::npos ? 1.0f : 1.0f / std::sqrt(static_cast<float>(shape[1])));
    for (uint64_t done = 0; done < n;) {
      const uint64_t m = std::min<uint64_t>(chunk.size(), n - done);
      for (uint64_t i = 0; i < m; ++i) {
        // xorshift64*, summed in pairs for a bell shape
        state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
        const uint64_t r = state * 0x2545F4914F6CDD1Dull;
        const float u = (static_cast<float>(r >> 40) + static_cast<float>((r >> 16) & 0xFFFFFF)) / 16777216.0f - 1.0f;
        chunk[i] = bf16(norm ? 1.0f : scale * 1.7f * u);
      }
      out.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(m * 2));
      done += m;
    }
  }
  // tokenizer.bin: the 3 specials, the 256 bytes, then filler pieces up to the vocabulary.
  std::string tok;
  auto put_piece = [&](const std::string& p) {
    const float score = 0.0f;
    const int32_t n = static_cast<int32_t>(p.size());
    tok.append(reinterpret_cast<const char*>(&score), 4).append(reinterpret_cast<const char*>(&n), 4) += p;
  };
  const int32_t max_len = 16;
  tok.append(reinterpret_cast<const char*>(&max_len), 4);
  put_piece("<unk>"), put_piece("\n<s>\n"), put_piece("\n</s>\n");
  for (int b = 0; b < 256; ++b) put_piece(fmt::format("<0x{:02X}>", b));
  for (int i = 259; i < s.vocab; ++i) put_piece(fmt::format("~{}", i));
  std::ofstream(dir / "tokenizer.bin", std::ios::binary) << tok;
}

double gib(double mib) { return mib / 1024.0; }

// FLOPs of one GPTQ run: the calibration forward (both passes), the Hessians (tokens·n² per distinct
// linear input, symmetric) and the solves: the Hessian's Cholesky factor n³/3 once per distinct
// input (q/k/v and gate/up share theirs; GPTQ needs no inverse in the form the solver uses, see
// quant/hessian_factor.hpp) and GPTQ's updates rows·n² per linear (every column's differences are
// multiply-added into the rows × (later columns): rows·n²/2 multiply-adds in all).
// The proxy loss comes from the solve's own column losses (no product). The head counts as a linear.
// Outlier smoothing (on by default, timed with the solves) ranks five strengths per distinct input
// by the proxy loss of RTN on up to 256 rows (128 past 1024 inputs) of each linear reading it:
// 2·rows·n² each.
struct Flops {
  double forward = 0, hessians = 0, solves = 0;
};
Flops quantize_flops(const Shape& s, int nsamples, int seqlen) {
  const double hd = s.dim / s.heads, kv = s.kv_heads * hd, tokens = static_cast<double>(nsamples) * seqlen;
  const double linear_params = 2.0 * s.dim * s.dim + 2.0 * kv * s.dim + 3.0 * s.ffn * s.dim;
  // Per token and pass: scores and weighted sum (2 + 2 FLOPs per key and dimension) over the keys it
  // sees, seqlen / 2 on average (counted as the whole window before: 0.38 TFLOP too many on the 1.1B
  // shape, which flattered the ratio once the forward stopped computing the causal mask's zeros).
  const double attention = 2.0 * seqlen * s.dim;
  Flops f;
  // Two passes per block: the first only observes the linears' inputs and skips the last one's
  // product (mlp.down), the second runs the quantized block whole.
  f.forward = tokens * s.layers * (2.0 * (2.0 * linear_params - static_cast<double>(s.ffn) * s.dim) + 2.0 * attention);
  f.hessians = tokens * s.layers * (3.0 * s.dim * s.dim + static_cast<double>(s.ffn) * s.ffn);
  auto factor = [&](double cols) { f.solves += 1.0 / 3.0 * cols * cols * cols; };
  // Outlier smoothing's five candidates (sampled rows' quadratic forms under H) are searched only on
  // inputs a norm produces: q/k/v's, gate/up's and the head's.
  auto linear = [&](double rows, double cols, bool reads_norm) {
    f.solves += rows * cols * cols;
    if (reads_norm) f.solves += 5.0 * 2.0 * std::min(rows, cols > 1024 ? 128.0 : 256.0) * cols * cols;
  };
  for (int l = 0; l < s.layers; ++l) {
    factor(s.dim), linear(s.dim, s.dim, true), linear(kv, s.dim, true), linear(kv, s.dim, true);  // q, k, v
    factor(s.dim), linear(s.dim, s.dim, false);                                                   // o
    factor(s.dim), linear(s.ffn, s.dim, true), linear(s.ffn, s.dim, true);                        // gate, up
    factor(s.ffn), linear(s.dim, s.ffn, false);                                                   // down
  }
  factor(s.dim), linear(s.vocab, s.dim, true);  // the output head (GPTQ on the final norm's output by default)
  return f;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? NAN : v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double best_tokens_per_second(const std::vector<std::string>& argv, int reps, std::string* failure) {
  double best = 0;
  for (int i = 0; i < reps; ++i) {
    const Run r = run(argv);
    if (r.status != 0) {
      *failure = r.output;
      return NAN;
    }
    best = std::max(best, number_after(r.output, R"(\(([0-9.]+) tokens/s\))"));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  baq::configure_blas();
  std::vector<std::string> shapes = {"tinyllama", "llama3-8b", "kdoc"};
  fs::path dir = "/tmp/baq-scale";
  int nsamples = 8, seqlen = 512;
  bool generate = true, keep = false, reuse = false;
  int mpi_ranks = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--shapes") {
      shapes.clear();
      std::string list = next();
      for (size_t at = 0; at <= list.size();) {
        const size_t comma = std::min(list.find(',', at), list.size());
        shapes.push_back(list.substr(at, comma - at));
        at = comma + 1;
      }
    } else if (a == "--dir") dir = next();
    else if (a == "--nsamples") nsamples = std::stoi(next());
    else if (a == "--seqlen") seqlen = std::stoi(next());
    else if (a == "--skip-generate") generate = false;
    else if (a == "--keep") keep = true;
    else if (a == "--reuse") reuse = true;
    else if (a == "--mpi") mpi_ranks = std::stoi(next());
    else {
      std::fprintf(stderr, "usage: bench_scale [--shapes tinyllama,llama3-8b,kdoc] [--dir D] [--nsamples N] [--seqlen T] [--skip-generate] [--keep] [--reuse] [--mpi N]\n");
      return 2;
    }
  }
  const std::string baq = BAQ_BINARY, shared = BAQ_SHARED_DIR, calib = shared + "/data/c4/c4-sample-200.jsonl";
  const double bandwidth = stream_bandwidth(), gflops = sgemm_rate();
  fmt::print("machine: {} threads, stream read {:.1f} GB/s, sgemm {:.0f} GFLOP/s\n", omp_get_max_threads(), bandwidth / 1e9,
             gflops / 1e9);

  for (const std::string& name : shapes) {
    if (name == "kdoc") {
      const std::string hf = shared + "/models/kdoc-6.8M/hf";
      if (!fs::exists(hf)) {
        fmt::print("\nkdoc-6.8M: ../shared absent, skipped\n");
        continue;
      }
      fmt::print("\nkdoc-6.8M: generation (128 tokens, greedy, best of 5)\n");
      fmt::print("{:<22} {:>12} {:>12}\n", "model", "1 thread", "2 threads");
      fs::create_directories(dir);
      std::vector<std::pair<std::string, std::string>> models = {{"original (BF16)", hf}};
      for (int bits : {2, 3, 4}) {
        const std::string out = (dir / fmt::format("kdoc.q{}.baq", bits)).string();
        const Run q = run({baq, "quantize", hf, "--calib", calib, "--nsamples", "128", "--seqlen", "256", "--bits",
                           std::to_string(bits), "--out", out});
        if (q.status != 0) {
          fmt::print("quantize {} bits failed:\n{}\n", bits, q.output);
          continue;
        }
        models.emplace_back(fmt::format(".baq GPTQ {} bits", bits), out);
      }
      for (const auto& [label, path] : models) {
        std::string failure;
        const double one = best_tokens_per_second({baq, "--threads", "1", "generate", path, "--prompt", "The kernel", "-n",
                                                   "128", "--temp", "0"}, 5, &failure);
        const double two = best_tokens_per_second({baq, "--threads", "2", "generate", path, "--prompt", "The kernel", "-n",
                                                   "128", "--temp", "0"}, 5, &failure);
        fmt::print("{:<22} {:>12.0f} {:>12.0f}{}\n", label, one, two, failure.empty() ? "" : "  failed: " + failure);
      }
      continue;
    }
    const auto it = std::find_if(kShapes.begin(), kShapes.end(), [&](const Shape& s) { return s.name == name; });
    if (it == kShapes.end()) {
      std::fprintf(stderr, "unknown shape '%s'\n", name.c_str());
      return 2;
    }
    const Shape& s = *it;
    const fs::path model = dir / s.name;
    fmt::print("\n{}: hidden {}, FFN {}, {} layers, {}/{} heads, vocabulary {}\n", s.name, s.dim, s.ffn, s.layers, s.heads,
               s.kv_heads, s.vocab);
    if (!fs::exists(model / "model.safetensors")) {
      const auto t0 = std::chrono::steady_clock::now();
      write_checkpoint(s, model);
      fmt::print("  wrote the checkpoint in {:.1f} s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double file_gib = static_cast<double>(fs::file_size(model / "model.safetensors")) / (1024.0 * 1024 * 1024);
    fmt::print("  checkpoint {:.2f} GiB (BF16)\n", file_gib);
    // Drop the checkpoint from the page cache between commands? Not possible unprivileged everywhere:
    // the numbers below are with it cached where it fits (the usual case on a machine that just wrote it).
    const Run info = run({baq, "info", model.string()});
    fmt::print("  info      {:8.2f} s  peak {:8.1f} MiB{}\n", info.seconds, info.peak_mib, info.status ? "  FAILED" : "");

    const std::string out = (dir / (s.name + ".q4.baq")).string();
    if (reuse && fs::exists(out)) {
      fmt::print("  quantize  skipped: --reuse takes {}\n", out);
    } else {
      const Run q = run({baq, "quantize", model.string(), "--calib", calib, "--nsamples", std::to_string(nsamples), "--seqlen",
                         std::to_string(seqlen), "--bits", "4", "--out", out});
      if (q.status != 0) {
        fmt::print("  quantize FAILED:\n{}\n", q.output);
        continue;
      }
      const double est_alloc = number_after(q.output, R"(estimated peak ([0-9.]+) GiB allocated)");
      const double est_mapped = number_after(q.output, R"(\+ ([0-9.]+) GiB of mapped)");
      fmt::print("  quantize  {:8.1f} s  peak {:8.2f} GiB  (estimate {:.2f} GiB allocated + {:.2f} GiB mapped = {:.2f}; "
                 "measured/estimate {:.2f})\n",
                 q.seconds, gib(q.peak_mib), est_alloc, est_mapped, est_alloc + est_mapped, gib(q.peak_mib) / (est_alloc + est_mapped));
      std::smatch m;
      if (std::regex_search(q.output, m, std::regex("stages: ([^\n]*)"))) fmt::print("            stages: {}\n", m[1].str());
      const Flops f = quantize_flops(s, nsamples, seqlen);
      const double forward_s = number_after(q.output, R"(forward ([0-9.]+) s)");
      const double hessian_s = number_after(q.output, R"(Hessians ([0-9.]+) s)");
      const double solve_s = number_after(q.output, R"(solve ([0-9.]+) s)");
      // This machine's rate drifts by up to 2x over minutes (a shared VM): sgemm is measured again
      // after the run and the ratio uses the mean of the two.
      const double gflops_after = sgemm_rate(), rate = (gflops + gflops_after) / 2;
      fmt::print("            FLOPs: forward {:.1f} TFLOP ({:.0f} GFLOP/s), Hessians {:.1f} TFLOP ({:.0f} GFLOP/s), "
                 "solves {:.1f} TFLOP ({:.0f} GFLOP/s)\n            wall / (FLOPs / sgemm rate) = {:.2f}  (sgemm {:.0f} "
                 "GFLOP/s before the run, {:.0f} after)\n",
                 f.forward / 1e12, f.forward / forward_s / 1e9, f.hessians / 1e12, f.hessians / hessian_s / 1e9,
                 f.solves / 1e12, f.solves / solve_s / 1e9, q.seconds / ((f.forward + f.hessians + f.solves) / rate),
                 gflops / 1e9, gflops_after / 1e9);
      if (mpi_ranks > 1) {
        // The same command under mpirun: one rank with every core, then N ranks sharing them.
        const int cores = omp_get_max_threads();
        auto mpirun = [&](int ranks, const std::string& o) {
          return run({"mpirun", "-q", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-x",
                      fmt::format("OMP_NUM_THREADS={}", std::max(1, cores / ranks)), "-np", std::to_string(ranks), baq, "quantize",
                      model.string(), "--calib", calib, "--nsamples", std::to_string(nsamples), "--seqlen", std::to_string(seqlen),
                      "--bits", "4", "--out", o});
        };
        const std::string o1 = (dir / (s.name + ".np1.baq")).string(), on = (dir / (s.name + ".npN.baq")).string();
        const Run one = mpirun(1, o1), many = mpirun(mpi_ranks, on);
        if (one.status != 0 || many.status != 0) {
          fmt::print("  mpirun FAILED:\n{}\n{}\n", one.output, many.output);
        } else {
          fmt::print("  mpirun    -np 1: {:.1f} s ({} threads), -np {}: {:.1f} s ({} thread(s) per rank), speed-up {:.2f}; "
                     "files {}\n",
                     one.seconds, cores, mpi_ranks, many.seconds, std::max(1, cores / mpi_ranks), one.seconds / many.seconds,
                     read_file(o1) == read_file(on) ? "byte-identical" : "differ in rounding");
          const std::regex rank_line(R"(rank (\d+) \((\d+) windows\): forward ([0-9.]+) s, Hessians ([0-9.]+) s, reduce ([0-9.]+) s, solve ([0-9.]+) s, pack ([0-9.]+) s, broadcast ([0-9.]+) s)");
          for (auto it = std::sregex_iterator(many.output.begin(), many.output.end(), rank_line); it != std::sregex_iterator(); ++it) {
            const std::smatch& r = *it;
            const double comm = std::stod(r[5]) + std::stod(r[8]);
            fmt::print("            rank {} ({} windows): forward {} s, Hessians {} s, solve {} s; communicating {:.1f} s "
                       "(reduce {} s, broadcast {} s — waiting for other ranks' solves included)\n",
                       r[1].str(), r[2].str(), r[3].str(), r[4].str(), r[6].str(), comm, r[5].str(), r[8].str());
          }
        }
        if (!keep) fs::remove(o1), fs::remove(on);
      }
    }
    if (!generate || s.name != "tinyllama") continue;
    // Generation against the bound: every weight read once per token (the embedding: one row).
    // This VM's read bandwidth moves by up to 2x within minutes (26-60 GB/s seen in one session), so
    // each run is paired with the bandwidth measured around it, and the medians are printed.
    fmt::print("  generate (64 tokens, greedy, 5 runs; bound = weight bytes per token / stream bandwidth measured just\n"
               "  before and after each run; medians of the tokens/s, the stream and the per-run ratio, and the ratios' range)\n");
    std::vector<std::pair<std::string, std::string>> models = {{"original (BF16)", model.string()}};
    for (int bits : {2, 3}) {
      const std::string o = (dir / fmt::format("{}.q{}.baq", s.name, bits)).string();
      if (reuse && fs::exists(o)) models.emplace_back(fmt::format(".baq RTN {} bits", bits), o);
      else if (run({baq, "quantize", model.string(), "--method", "rtn", "--calib", calib, "--nsamples", "1", "--seqlen", "64",
               "--bits", std::to_string(bits), "--out", o}).status == 0)
        models.emplace_back(fmt::format(".baq RTN {} bits", bits), o);
    }
    models.emplace_back(".baq GPTQ 4 bits", out);
    // BAQ's mixed level counts (radix codes, run through their planes twin): the calibration of the
    // quantize row above.
    const std::string baq3 = (dir / fmt::format("{}.baq3.baq", s.name)).string();
    if ((reuse && fs::exists(baq3)) ||
        run({baq, "quantize", model.string(), "--method", "baq", "--calib", calib, "--nsamples", std::to_string(nsamples),
             "--seqlen", std::to_string(seqlen), "--bits", "3", "--out", baq3}).status == 0)
      models.emplace_back(".baq BAQ 3 bits", baq3);
    // The 2- and 3-bit RTN files again with 8-bit inputs to the fused products (--input-bits 8: one
    // integer product per 64 weights; its damage is in the README).
    const size_t files = models.size();
    for (size_t i = 1; i <= 2 && i < files; ++i) {
      std::pair<std::string, std::string> again = models[i];  // a copy: emplace_back may reallocate
      models.emplace_back(again.first + ", --input-bits 8", again.second);
    }
    for (size_t m = 0; m < models.size(); ++m) {
      const auto& [label, path] = models[m];
      const bool eight = m >= files;
      // All but the embedding table, at the bits `info` says it is stored with (BF16 in the original).
      const Run i = run({baq, "info", path});
      std::smatch e;
      const double embed_bits = path.ends_with(".baq") && std::regex_search(i.output, e, std::regex(R"(embed_tokens\.weight\s+\d+x\d+\s+([0-9.]+))"))
                                    ? std::stod(e[1].str())
                                    : 16.0;
      const double file = static_cast<double>(path.ends_with(".baq") ? fs::file_size(path) : fs::file_size(fs::path(path) / "model.safetensors"));
      const double bytes = file - embed_bits / 8.0 * static_cast<double>(s.vocab) * static_cast<double>(s.dim);
      std::string failure;
      std::vector<std::string> argv = {baq, "generate", path, "--prompt", "Once upon a time", "-n", "64", "--temp", "0"};
      if (eight) argv.insert(argv.end(), {"--input-bits", "8"});
      std::vector<double> tokens, streams, ratios;
      for (int round = 0; round < 5 && failure.empty(); ++round) {
        const double before = stream_bandwidth();
        const double tps = best_tokens_per_second(argv, 1, &failure);
        const double stream = (before + stream_bandwidth()) / 2;
        tokens.push_back(tps);
        streams.push_back(stream);
        ratios.push_back(tps * bytes / stream);
      }
      const double tps = median(tokens), stream = median(streams);
      fmt::print("    {:<36} {:8.2f} tokens/s  bound {:8.2f} (stream {:.1f} GB/s)  ratio {:.2f} ({:.2f}–{:.2f}){}\n", label, tps,
                 stream / bytes, stream / 1e9, median(ratios), *std::min_element(ratios.begin(), ratios.end()),
                 *std::max_element(ratios.begin(), ratios.end()), failure.empty() ? "" : "  failed: " + failure);
    }
    if (!keep && !reuse) {
      for (const auto& [label, path] : models)
        if (path.ends_with(".baq")) fs::remove(path);
    }
  }
  return 0;
}
