#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "baq/baq_file.hpp"
#include "baq/error.hpp"
#include "baq/model.hpp"
#include "commands.hpp"

namespace baq::cli {

Command add_info_command(CLI::App& app) {
  auto* sub = app.add_subcommand("info", "Show a model's architecture, parameters, layer shapes and tokenizer");
  auto model = std::make_shared<std::string>();
  auto tokenizer = std::make_shared<std::string>();
  sub->add_option("MODEL", *model, kModelArgumentHelp)->required();
  sub->add_option("--tokenizer", *tokenizer, "Tokenizer file when the model does not carry one");
  return {sub, [model, tokenizer] {
            LoadedModel m = load_model(*model, *tokenizer, /*need_tokenizer=*/false);
            const ModelConfig& c = m.config;
            fmt::print("model        {}\n", m.path);
            fmt::print("format       {} — {}\n", m.format, m.source->describe());
            fmt::print("config       {}\n", m.config_source);
            // info does not need a tokenizer, but says which one ppl/quantize would use and its files, or why none.
            std::string tokenizer_line;
            try {
              if (!m.tokenizer) m.tokenizer = open_model_tokenizer(m, *tokenizer);
              const Tokenizer& t = *m.tokenizer;
              tokenizer_line = fmt::format("{}; BOS {} {}, EOS {}", t.describe(), t.bos_id(),
                                           t.adds_bos() ? "added" : "not added", fmt::join(t.eos_ids(), ", "));
              std::vector<std::string> origins;
              for (const auto& f : m.tokenizer->files()) origins.push_back(f.origin);
              if (!origins.empty()) tokenizer_line += fmt::format(" — read from {}", fmt::join(origins, ", "));
            } catch (const Error& e) {
              tokenizer_line = fmt::format("none: {}", e.what());
            }
            fmt::print("architecture {} ({}), {} layers, dim {}, ffn {}, heads {} / kv heads {} (head size {})\n",
                       c.arch_name(), c.family->hf_architectures.front(), c.n_layers, c.dim, c.hidden_dim, c.n_heads,
                       c.n_kv_heads, c.head_dim());
            for (const std::string& line : c.describe()) fmt::print("  {}\n", line);
            fmt::print("vocabulary   {}, context {}, output head {}\n", c.vocab_size, c.max_seq_len,
                       c.tied_embeddings ? "tied to the embedding" : "separate");
            fmt::print("parameters   {}\n", m.model->parameter_count());
            std::map<std::string, int> dtypes;
            for (const auto& t : m.source->tensors()) dtypes[dtype_name(t.dtype)]++;
            std::string dtype_list;
            for (const auto& [name, count] : dtypes) dtype_list += fmt::format("{}{} ({} tensors)", dtype_list.empty() ? "" : ", ", name, count);
            fmt::print("dtype        {} (kept mapped as stored; converted to F32 one tile at a time)\n", dtype_list);
            fmt::print("tokenizer    {}\n", tokenizer_line);
            if (const auto* baq = dynamic_cast<const BaqFileReader*>(m.source.get())) {
              // Size on disk, bits per weight as stored, and each packed layer's widths.
              uint64_t packed_bytes = 0, fp_bytes = 0;
              int64_t weights = 0;
              fmt::print("size on disk {} bytes\n", baq->file_size());
              fmt::print("{:<40} {:>12} {:>10} {:>10} {:>8}\n", "packed layer", "shape", "bits/wt", "levels", "");
              for (const auto& r : baq->records()) {
                if (r.kind == "f32" || r.kind == "bf16") fp_bytes += r.bytes;
                if (r.kind != "packed") continue;
                const PackedLinear p = baq->packed(r.name);
                const auto [lo, hi] = std::minmax_element(p.levels.begin(), p.levels.end());
                packed_bytes += r.bytes;
                weights += p.rows * p.cols;
                fmt::print("{:<40} {:>12} {:>10.4f} {:>10}\n", r.name, fmt::format("{}x{}", p.rows, p.cols),
                           8.0 * static_cast<double>(r.bytes) / static_cast<double>(p.rows * p.cols),
                           *lo == *hi ? fmt::format("{}", *lo) : fmt::format("{}..{}", *lo, *hi));
              }
              fmt::print("quantized weights {}: {:.4f} bits per weight as stored ({} bytes); full-precision tensors {} bytes; "
                         "header and padding {} bytes\n",
                         weights, 8.0 * static_cast<double>(packed_bytes) / static_cast<double>(weights), packed_bytes,
                         fp_bytes, baq->file_size() - packed_bytes - fp_bytes);
              if (baq->metadata().contains("quantization"))
                fmt::print("quantization {}\n", baq->metadata()["quantization"].dump());
            }
            fmt::print("linear layers of block 0 (all {} blocks alike):\n", c.n_layers);
            for (const Linear* l : m.model->block(0).linears())
              fmt::print("  {:<10} [{} x {}]{}\n", l->name, l->out_features(), l->in_features(), l->bias.empty() ? "" : " + bias");
          }};
}

}  // namespace baq::cli
