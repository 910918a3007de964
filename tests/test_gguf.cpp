// GGUF: Q8_0/F16 decoding and malformed files written by the test itself (the shared
// stories260K.gguf is checked in test_real_models).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

// A minimal GGUF v3 writer: metadata (u32 / string values) and tensors with raw data.
struct GgufTensor {
  std::string name;
  std::vector<uint64_t> dims;  // fastest first, as GGUF stores them
  uint32_t type;
  std::string data;
  int64_t offset = -1;  // -1: laid out in order, aligned to 32
};

std::string gguf(const std::vector<std::pair<std::string, uint32_t>>& u32s, const std::vector<GgufTensor>& tensors,
                 uint32_t version = 3, uint64_t tensor_count_override = 0) {
  std::string out = "GGUF";
  auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  auto put_str = [&](const std::string& s) {
    const uint64_t n = s.size();
    put(&n, 8);
    out += s;
  };
  put(&version, 4);
  const uint64_t nt = tensor_count_override ? tensor_count_override : tensors.size(), nkv = u32s.size() + 1;
  put(&nt, 8);
  put(&nkv, 8);
  put_str("general.architecture");
  const uint32_t string_type = 8;
  put(&string_type, 4);
  put_str("llama");
  for (const auto& [k, v] : u32s) {
    put_str(k);
    const uint32_t t = 4;
    put(&t, 4);
    put(&v, 4);
  }
  uint64_t at = 0;
  for (const auto& t : tensors) {
    put_str(t.name);
    const auto nd = static_cast<uint32_t>(t.dims.size());
    put(&nd, 4);
    for (uint64_t d : t.dims) put(&d, 8);
    put(&t.type, 4);
    const uint64_t off = t.offset >= 0 ? static_cast<uint64_t>(t.offset) : at;
    put(&off, 8);
    at = (at + t.data.size() + 31) / 32 * 32;
  }
  out.resize((out.size() + 31) / 32 * 32, '\0');
  for (const auto& t : tensors) {
    out += t.data;
    out.resize((out.size() + 31) / 32 * 32, '\0');
  }
  return out;
}

std::vector<std::pair<std::string, uint32_t>> tiny_meta() {
  return {{"llama.embedding_length", 32}, {"llama.feed_forward_length", 8}, {"llama.block_count", 1},
          {"llama.attention.head_count", 2}, {"llama.context_length", 16}};
}

std::string f32s(const std::vector<float>& v) { return {reinterpret_cast<const char*>(v.data()), v.size() * 4}; }

TEST(Gguf, DecodesF32F16AndQ8_0) {
  TempDir dir;
  std::vector<float> emb(32 * 4);
  for (size_t i = 0; i < emb.size(); ++i) emb[i] = 0.25f * static_cast<float>(i % 9) - 1.0f;
  std::string f16;
  for (float v : {1.0f, -2.0f, 0.5f, 65504.0f}) {
    const uint16_t h = f32_to_f16(v);
    f16.append(reinterpret_cast<const char*>(&h), 2);
  }
  std::string q8;  // one block: scale 0.5, values -64..63 step 4
  const uint16_t d = f32_to_f16(0.5f);
  q8.append(reinterpret_cast<const char*>(&d), 2);
  for (int i = 0; i < 32; ++i) q8.push_back(static_cast<char>(static_cast<int8_t>(-64 + 4 * i)));
  write_bytes(dir.file("m.gguf"), gguf(tiny_meta(), {{"token_embd.weight", {32, 4}, 0, f32s(emb)},
                                                     {"x.f16", {4}, 1, f16},
                                                     {"x.q8", {32}, 8, q8}}));
  GgufReader r(dir.file("m.gguf"));
  EXPECT_EQ(read_gguf_config(r).dim, 32);
  EXPECT_EQ(read_gguf_config(r).family->name, "llama");
  const Tensor e = r.load("token_embd.weight");
  EXPECT_EQ(e.shape, (std::vector<int64_t>{4, 32}));  // GGUF dims are reversed
  EXPECT_EQ(std::vector<float>(e.span().begin(), e.span().end()), emb);
  const Tensor h = r.load("x.f16").to_f32();
  EXPECT_EQ(std::vector<float>(h.span().begin(), h.span().end()), (std::vector<float>{1.0f, -2.0f, 0.5f, 65504.0f}));
  const Tensor q = r.load("x.q8");
  for (int i = 0; i < 32; ++i) EXPECT_EQ(q.data[i], 0.5f * static_cast<float>(-64 + 4 * i));
}

TEST(Gguf, MalformedFilesFailClearly) {
  TempDir dir;
  const std::string p = dir.file("bad.gguf");
  const std::vector<float> emb(32 * 4, 0.5f);
  auto expect_error = [&](const std::string& bytes, const std::string& fragment) {
    write_bytes(p, bytes);
    try {
      GgufReader r(p);
      read_gguf_config(r);
      ADD_FAILURE() << "accepted: " << fragment;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
      EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    }
  };
  const std::string good = gguf(tiny_meta(), {{"token_embd.weight", {32, 4}, 0, f32s(emb)}});
  expect_error("GGUX" + good.substr(4), "bad magic");
  expect_error(gguf(tiny_meta(), {{"token_embd.weight", {32, 4}, 0, f32s(emb)}}, 1), "version 1 is not supported");
  expect_error(good.substr(0, 100), "truncated GGUF while reading");
  expect_error(good.substr(0, good.size() - 64), "outside the file");
  expect_error(gguf(tiny_meta(), {{"token_embd.weight", {32, 4}, 0, f32s(emb)}}, 3, uint64_t{1} << 61), "cannot fit");
  expect_error(gguf(tiny_meta(), {{"token_embd.weight", {32, 4}, 0, f32s(emb), 1 << 20}}), "outside the file");
  expect_error(gguf(tiny_meta(), {{"token_embd.weight", {32, 4}, 0, f32s(emb), 8}}), "not aligned");
  expect_error(gguf(tiny_meta(), {{"token_embd.weight", {32, 4}, 0, f32s(emb)}, {"token_embd.weight", {32, 4}, 0, f32s(emb)}}),
               "duplicate tensor");
  expect_error(gguf(tiny_meta(), {{"token_embd.weight", {32, 4}, 2, f32s(emb)}}), "unsupported type 2");
  expect_error(gguf(tiny_meta(), {{"token_embd.weight", {uint64_t{1} << 35, uint64_t{1} << 35}, 0, f32s(emb)}}),
               "impossible shape");
  auto meta = tiny_meta();
  meta.erase(meta.begin() + 2);  // no block count
  expect_error(gguf(meta, {{"token_embd.weight", {32, 4}, 0, f32s(emb)}}), "missing metadata 'llama.block_count'");
}

}  // namespace
}  // namespace baq::test
