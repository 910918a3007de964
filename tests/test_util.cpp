#include "test_util.hpp"

#include "baq/blas.hpp"
#include "baq/family.hpp"
#include "baq/io.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sys/wait.h>

namespace baq::test {

namespace fs = std::filesystem;

namespace {
// Every test binary links this file: BLAS runs the kernels the CPU supports, as in the baq binary.
const bool kBlasConfigured = (configure_blas(), true);
}  // namespace

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "baq-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void random_weights(const ModelConfig& c, uint32_t seed, Weights& w, Shapes& shapes) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double scale, double mean = 0.0) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<double> v(static_cast<size_t>(n));
    // Rounded to BF16-representable values so F32/F16/BF16 files hold the same numbers.
    for (auto& x : v) {
      float f = static_cast<float>(mean + scale * normal(rng));
      if (std::abs(f) < 1e-4f) f = 0.0f;  // keeps every value a normal F16 number too
      uint16_t b = f32_to_bf16(f);
      uint32_t bits = static_cast<uint32_t>(b) << 16;
      float r;
      std::memcpy(&r, &bits, 4);
      x = r;
    }
    w[name] = std::move(v);
    shapes[name] = std::move(shape);
  };
  const int64_t d = c.dim, h = c.hidden_dim, kv = c.kv_dim(), V = c.vocab_size;
  const double s = 1.0 / std::sqrt(static_cast<double>(d));
  if (c.family->name != "opt") {
    add("model.embed_tokens.weight", {V, d}, 1.0);
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {d}, 0.1, 1.0);
      add(p + "self_attn.q_proj.weight", {d, d}, s);
      add(p + "self_attn.k_proj.weight", {kv, d}, s);
      add(p + "self_attn.v_proj.weight", {kv, d}, s);
      add(p + "self_attn.o_proj.weight", {d, d}, s);
      add(p + "post_attention_layernorm.weight", {d}, 0.1, 1.0);
      add(p + "mlp.gate_proj.weight", {h, d}, s);
      add(p + "mlp.up_proj.weight", {h, d}, s);
      add(p + "mlp.down_proj.weight", {d, h}, 1.0 / std::sqrt(static_cast<double>(h)));
    }
    add("model.norm.weight", {d}, 0.1, 1.0);
    if (!c.tied_embeddings) add("lm_head.weight", {V, d}, s);
  } else {
    add("model.decoder.embed_tokens.weight", {V, d}, 1.0);
    add("model.decoder.embed_positions.weight", {c.max_seq_len + 2, d}, 0.3);
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = "model.decoder.layers." + std::to_string(l) + ".";
      for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"}) {
        add(p + m + ".weight", {d, d}, s);
        add(p + m + ".bias", {d}, 0.1);
      }
      add(p + "self_attn_layer_norm.weight", {d}, 0.1, 1.0);
      add(p + "self_attn_layer_norm.bias", {d}, 0.1);
      add(p + "fc1.weight", {h, d}, s);
      add(p + "fc1.bias", {h}, 0.1);
      add(p + "fc2.weight", {d, h}, 1.0 / std::sqrt(static_cast<double>(h)));
      add(p + "fc2.bias", {d}, 0.1);
      add(p + "final_layer_norm.weight", {d}, 0.1, 1.0);
      add(p + "final_layer_norm.bias", {d}, 0.1);
    }
    add("model.decoder.final_layer_norm.weight", {d}, 0.1, 1.0);
    add("model.decoder.final_layer_norm.bias", {d}, 0.1);
  }
}

ModelConfig small_llama(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int context, bool tied) {
  ModelConfig c;
  c.family = &family_named("llama");
  c.head_size = dim / heads;
  c.embed_dim = dim;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.vocab_size = vocab;
  c.max_seq_len = context;
  c.tied_embeddings = tied;
  return c;
}

LoadedModel random_hf_model(const ModelConfig& c, uint32_t seed, const fs::path& dir, Weights* weights) {
  Weights w;
  Shapes s;
  random_weights(c, seed, w, s);
  write_hf_folder(dir, c, w, s);
  if (weights != nullptr) *weights = w;
  return load_model(dir.string(), "", false);
}

void write_llama2c_tokenizer(const std::string& path, const std::vector<std::pair<std::string, float>>& extra) {
  std::string out;
  auto put_i = [&](int32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  auto put_piece = [&](const std::string& p, float score) {
    out.append(reinterpret_cast<const char*>(&score), 4);
    put_i(static_cast<int32_t>(p.size()));
    out += p;
  };
  put_i(16);
  put_piece("<unk>", 0);
  put_piece("\n<s>\n", 0);
  put_piece("\n</s>\n", 0);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    put_piece(buf, 0);
  }
  for (const auto& [p, score] : extra) put_piece(p, score);
  write_bytes(path, out);
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000;
  int32_t exp = static_cast<int32_t>((bits >> 23) & 0xff) - 127 + 15;
  uint32_t mant = bits & 0x7fffff;
  if ((bits & 0x7fffffff) == 0) return static_cast<uint16_t>(sign);
  if (exp <= 0 || exp >= 31) throw std::runtime_error("f32_to_f16: value outside the normal F16 range");
  uint32_t h = sign | static_cast<uint32_t>(exp) << 10 | mant >> 13;
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_raw_safetensors(const std::string& path, const std::string& header, const std::string& data) {
  const uint64_t n = header.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  write_bytes(path, bytes + header + data);
}

void write_hf_folder(const fs::path& dir, const ModelConfig& c, const Weights& w, const Shapes& shapes,
                     const std::string& dtype) {
  fs::create_directories(dir);
  write_bytes((dir / "config.json").string(), baq::hf_config_json(c));
  write_weights_safetensors((dir / "model.safetensors").string(), w, shapes, dtype);
}

void write_weights_safetensors(const std::string& path, const Weights& w, const Shapes& shapes, const std::string& dtype) {
  nlohmann::ordered_json header;
  std::string data;
  for (const auto& [name, values] : w) {
    const uint64_t begin = data.size();
    for (double v : values) {
      const float f = static_cast<float>(v);
      if (dtype == "F32") {
        data.append(reinterpret_cast<const char*>(&f), 4);
      } else {
        const uint16_t h = dtype == "BF16" ? f32_to_bf16(f) : f32_to_f16(f);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
    }
    header[name] = {{"dtype", dtype}, {"shape", shapes.at(name)}, {"data_offsets", {begin, data.size()}}};
  }
  write_raw_safetensors(path, header.dump(), data);
}

void GgufWriter::u32(const std::string& key, uint32_t v) { kv_.push_back({key, 4, std::string(reinterpret_cast<const char*>(&v), 4)}); }
void GgufWriter::f32(const std::string& key, float v) { kv_.push_back({key, 6, std::string(reinterpret_cast<const char*>(&v), 4)}); }
void GgufWriter::str(const std::string& key, const std::string& v) {
  const uint64_t n = v.size();
  kv_.push_back({key, 8, std::string(reinterpret_cast<const char*>(&n), 8) + v});
}
void GgufWriter::strings(const std::string& key, const std::vector<std::string>& v) {
  std::string bytes;
  const uint32_t type = 8;
  const uint64_t n = v.size();
  bytes.append(reinterpret_cast<const char*>(&type), 4).append(reinterpret_cast<const char*>(&n), 8);
  for (const auto& s : v) {
    const uint64_t len = s.size();
    bytes.append(reinterpret_cast<const char*>(&len), 8);
    bytes += s;
  }
  kv_.push_back({key, 9, bytes});
}
void GgufWriter::floats(const std::string& key, const std::vector<float>& v) {
  std::string bytes;
  const uint32_t type = 6;
  const uint64_t n = v.size();
  bytes.append(reinterpret_cast<const char*>(&type), 4).append(reinterpret_cast<const char*>(&n), 8);
  bytes.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  kv_.push_back({key, 9, bytes});
}
void GgufWriter::tensor(const std::string& name, const std::vector<int64_t>& shape, const std::vector<double>& values,
                        bool f16) {
  std::string data;
  for (double v : values) {
    const float f = static_cast<float>(v);
    if (f16) {
      const uint16_t h = f32_to_f16(f);
      data.append(reinterpret_cast<const char*>(&h), 2);
    } else {
      data.append(reinterpret_cast<const char*>(&f), 4);
    }
  }
  tensors_.push_back({name, shape, f16 ? 1u : 0u, data});
}
void GgufWriter::write(const std::string& path) const {
  std::string out = "GGUF";
  auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  auto put_str = [&](const std::string& s) {
    const uint64_t n = s.size();
    put(&n, 8);
    out += s;
  };
  const uint32_t version = 3;
  const uint64_t nt = tensors_.size(), nkv = kv_.size();
  put(&version, 4);
  put(&nt, 8);
  put(&nkv, 8);
  for (const auto& k : kv_) {
    put_str(k.key);
    put(&k.type, 4);
    out += k.bytes;
  }
  uint64_t at = 0;
  for (const auto& t : tensors_) {
    put_str(t.name);
    const auto nd = static_cast<uint32_t>(t.shape.size());
    put(&nd, 4);
    for (size_t d = t.shape.size(); d-- > 0;) {  // GGUF lists the fastest dimension first
      const auto v = static_cast<uint64_t>(t.shape[d]);
      put(&v, 8);
    }
    put(&t.type, 4);
    put(&at, 8);
    at = (at + t.data.size() + 31) / 32 * 32;
  }
  out.resize((out.size() + 31) / 32 * 32, '\0');
  for (const auto& t : tensors_) {
    out += t.data;
    out.resize((out.size() + 31) / 32 * 32, '\0');
  }
  write_bytes(path, out);
}

void write_llama2c(const std::string& path, const ModelConfig& c, const Weights& w) {
  std::string out;
  const int32_t header[7] = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                             c.tied_embeddings ? c.vocab_size : -c.vocab_size, c.max_seq_len};
  out.append(reinterpret_cast<const char*>(header), sizeof header);
  auto put = [&](const std::string& name) {
    for (double v : w.at(name)) {
      const float f = static_cast<float>(v);
      out.append(reinterpret_cast<const char*>(&f), 4);
    }
  };
  auto stacked = [&](const std::string& suffix) {
    for (int l = 0; l < c.n_layers; ++l) put("model.layers." + std::to_string(l) + "." + suffix);
  };
  put("model.embed_tokens.weight");
  stacked("input_layernorm.weight");
  stacked("self_attn.q_proj.weight");
  stacked("self_attn.k_proj.weight");
  stacked("self_attn.v_proj.weight");
  stacked("self_attn.o_proj.weight");
  stacked("post_attention_layernorm.weight");
  stacked("mlp.gate_proj.weight");
  stacked("mlp.down_proj.weight");
  stacked("mlp.up_proj.weight");
  put("model.norm.weight");
  out.append(static_cast<size_t>(c.max_seq_len) * c.head_dim() * 4, '\0');
  if (!c.tied_embeddings) put("lm_head.weight");
  write_bytes(path, out);
}

CommandResult run_command(const std::string& command) {
  CommandResult r{-1, {}};
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  const int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string shared_dir() { return BAQ_SHARED_DIR; }
bool shared_has(const std::string& relative) { return fs::exists(fs::path(shared_dir()) / relative); }

}  // namespace baq::test
