// The .baq container: packed layers decode to exactly the quantizer's weights, a model read from the
// file computes exactly what the quantized model computed, the size on disk is the reported bits,
// and every kind of corruption fails with a clear error.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>

#include "baq/baq_file.hpp"
#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "baq/perplexity.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

class BaqFile : public ::testing::Test {
 protected:
  void SetUp() override {
    c = small_llama(16, 43, 2, 4, 2, 37, 16, false);  // 43: prime FFN width
    random_hf_model(c, 51, dir.path());
    std::vector<int> t(400);
    for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int>((i * 7 + i / 3) % c.vocab_size);
    tokens = t;
    calib = sample_calibration_windows(t, 12, 16, 4);
  }
  // Quantizes a fresh copy of the model and saves it; returns the in-memory quantized model.
  LoadedModel quantize_and_save(QuantMethod method, const std::string& path, QuantizeRun* run_out = nullptr) {
    LoadedModel m = load_model(dir.path().string(), "", false);
    QuantizeOptions o;
    o.method = method;
    o.settings.bits = 3;
    o.settings.group_size = 8;  // 43 = 5 groups of 8 + 3
    o.settings.act_order = true;
    o.rate = 2.5;
    QuantizeRun run = quantize_model(*m.model, calib, 16, o);
    save_baq(path, *m.model, nullptr, {{"note", "test"}});
    if (run_out != nullptr) *run_out = std::move(run);
    return m;
  }
  ModelConfig c;
  TempDir dir, out;
  std::vector<int> tokens, calib;
};

TEST_F(BaqFile, RoundTripIsExactForEveryMethod) {
  for (auto method : {QuantMethod::Rtn, QuantMethod::Gptq, QuantMethod::Baq}) {
    const std::string path = out.file(std::string(method_name(method)) + ".baq");
    QuantizeRun run;
    const LoadedModel q = quantize_and_save(method, path, &run);
    const LoadedModel back = load_model(path, "", false);
    EXPECT_EQ(back.format, "baq packed");
    EXPECT_EQ(back.config.hidden_dim, 43);
    // Every tensor equals the quantized model's own values bit for bit: others as read, packed ones
    // through the reference decoder and through both row decoders (AVX2 and scalar).
    const auto a = q.model->tensors(), b = back.model->tensors();
    ASSERT_EQ(a.size(), b.size());
    std::map<std::string, std::pair<const PackedLinear*, const PackedLinear*>> packed_of;
    for (int blk = 0; blk < back.model->n_blocks(); ++blk) {
      const auto ql = q.model->block(blk).linears(), bl = back.model->block(blk).linears();
      ASSERT_EQ(ql.size(), bl.size());
      for (size_t k = 0; k < bl.size(); ++k) {
        ASSERT_NE(bl[k]->packed, nullptr) << bl[k]->name;  // run packed, never expanded
        EXPECT_TRUE(bl[k]->weight.empty());
        packed_of[bl[k]->tensor] = {ql[k]->packed.get(), bl[k]->packed.get()};
      }
    }
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i].first, b[i].first);
      ASSERT_EQ(a[i].second->shape, b[i].second->shape) << a[i].first;
      if (auto it = packed_of.find(b[i].first); it != packed_of.end()) {
        const PackedLinear& p = *it->second.second;
        const Tensor mine = dequantize(*it->second.first);
        const size_t bytes = static_cast<size_t>(mine.numel()) * 4;
        EXPECT_EQ(0, std::memcmp(mine.data, dequantize(p).data, bytes)) << a[i].first;
        std::vector<float> scalar(bytes / 4), avx2(bytes / 4);
        decode_rows_scalar(p, 0, p.rows, scalar.data());
        EXPECT_EQ(0, std::memcmp(mine.data, scalar.data(), bytes)) << a[i].first;
        if (cpu_has_avx2()) {
          decode_rows_avx2(p, 0, p.rows, avx2.data());
          EXPECT_EQ(0, std::memcmp(scalar.data(), avx2.data(), bytes)) << a[i].first;
        }
        // The fused one-token product equals the decoded rows dotted in double, to F32 rounding.
        std::vector<float> x(static_cast<size_t>(p.cols)), y(static_cast<size_t>(p.rows));
        for (size_t j = 0; j < x.size(); ++j) x[j] = static_cast<float>(std::sin(0.7 * static_cast<double>(j) + 0.3));
        packed_matvec(x.data(), p, y.data());
        for (int64_t r = 0; r < p.rows; ++r) {
          double ref = 0, mag = 0;
          for (int64_t j = 0; j < p.cols; ++j) {
            ref += static_cast<double>(scalar[static_cast<size_t>(r * p.cols + j)]) * x[static_cast<size_t>(j)];
            mag += std::abs(static_cast<double>(scalar[static_cast<size_t>(r * p.cols + j)]) * x[static_cast<size_t>(j)]);
          }
          EXPECT_NEAR(y[static_cast<size_t>(r)], ref, 1e-6 * mag + 1e-12) << a[i].first << " row " << r;
        }
      } else {
        const Tensor x = a[i].second->to_f32(), y = b[i].second->to_f32();
        EXPECT_EQ(0, std::memcmp(x.data, y.data, static_cast<size_t>(x.numel()) * 4)) << a[i].first;
      }
    }
    // Packed matmuls sum in tiles: the same perplexity to 1e-5.
    PplOptions o;
    o.seqlen = 16;
    const double nq = evaluate_perplexity(*q.model, tokens, o).perplexity();
    EXPECT_NEAR(evaluate_perplexity(*back.model, tokens, o).perplexity(), nq, 1e-5 * nq);
    // The packed records are the reported bits; what remains is F32 tensors, the header and padding.
    const BaqFileReader reader(path);
    uint64_t packed = 0, fp = 0, records = 0;
    for (const auto& r : reader.records()) {
      (r.kind == "packed" ? packed : fp) += r.bytes;
      EXPECT_TRUE(r.kind == "packed" || r.kind == "bf16") << r.name;  // the test weights are BF16 numbers
      ++records;
    }
    EXPECT_LE(run.bits.total() / 8, static_cast<double>(packed));
    EXPECT_LE(static_cast<double>(packed), run.bits.total() / 8 + 14.0 * 7);  // ≤ 7 bytes of section padding each
    EXPECT_LE(reader.file_size(), packed + fp + 64 * records + 64 + 8192);
    EXPECT_EQ(reader.metadata()["note"], "test");
  }
}

// Flips, truncations, versions and lying sizes: a clear one-line error naming the file.
TEST_F(BaqFile, CorruptFilesFailClearly) {
  const std::string path = out.file("m.baq");
  quantize_and_save(QuantMethod::Baq, path);
  const std::string good = read_bytes(path);
  auto expect_error = [&](const std::string& bytes, const std::string& fragment) {
    const std::string bad = out.file("bad.baq");
    write_bytes(bad, bytes);
    try {
      const LoadedModel m = load_model(bad, "", false);
      ADD_FAILURE() << "accepted: " << fragment;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("bad.baq"), std::string::npos) << msg;
      EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos);
    }
  };
  uint64_t header_offset, header_len;
  std::memcpy(&header_offset, good.data() + 16, 8);
  std::memcpy(&header_len, good.data() + 24, 8);
  ASSERT_EQ(header_offset + header_len, good.size());
  auto header = nlohmann::json::parse(good.substr(header_offset, header_len));
  const auto& first_packed = [&]() -> nlohmann::json& {
    for (auto& r : header["records"])
      if (r["kind"] == "packed") return r;
    throw std::runtime_error("no packed record");
  }();
  // A flipped byte inside a packed record, in the header, in the prologue.
  std::string flipped = good;
  flipped[first_packed["offset"].get<size_t>() + 3] ^= 0x40;
  expect_error(flipped, "checksum mismatch");
  flipped = good;
  flipped[header_offset + 5] ^= 0x01;
  expect_error(flipped, "header checksum mismatch");
  flipped = good;
  flipped[20] ^= 0x01;
  expect_error(flipped, "prologue checksum mismatch");
  flipped = good;
  flipped[50] = 1;
  expect_error(flipped, "prologue byte 50 is not zero");
  // Every padding byte between records is checked: flip each in turn.
  {
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (const auto& r : header["records"]) spans.emplace_back(r["offset"].get<uint64_t>(), r["bytes"].get<uint64_t>());
    std::sort(spans.begin(), spans.end());
    uint64_t at = 64;
    int flips = 0;
    for (const auto& [off, n] : spans) {
      for (uint64_t i = at; i < off; ++i, ++flips) {
        flipped = good;
        flipped[i] = 7;
        expect_error(flipped, "padding byte");
      }
      at = off + n;
    }
    EXPECT_GT(flips, 10);
  }
  expect_error(good + "appended", "bytes follow the header");
  expect_error(good.substr(0, good.size() - 100), "truncated?");
  expect_error(good.substr(0, 20), "truncated");
  std::string version = good;
  version[8] = 9;
  expect_error(version, "version 9 is not supported");
  expect_error("NOTABAQ!" + good.substr(8), "unknown model format");
  // A header that lies, with valid checksums: the new header replaces the old one at its offset.
  auto with_header = [&](const std::string& text) {
    std::string bytes = good.substr(0, header_offset) + text;
    const uint32_t crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(text.data()), static_cast<uInt>(text.size())));
    const uint64_t len = text.size();
    std::memcpy(bytes.data() + 12, &crc, 4);
    std::memcpy(bytes.data() + 24, &len, 8);
    const uint32_t pcrc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), 32));
    std::memcpy(bytes.data() + 32, &pcrc, 4);
    return bytes;
  };
  auto rewrite = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json h = header;
    edit(h);
    return with_header(h.dump());
  };
  expect_error(rewrite([](nlohmann::json& h) {
                 for (auto& r : h["records"])
                   if (r["kind"] == "packed") {
                     r["bytes"] = r["bytes"].get<uint64_t>() - 8;
                     break;
                   }
               }),
               "but its fields need");
  expect_error(rewrite([](nlohmann::json& h) {
                 for (auto& r : h["records"])
                   if (r["kind"] == "packed") {
                     r["offset"] = r["offset"].get<uint64_t>() - 8;
                     break;
                   }
               }),
               "misaligned");
  expect_error(rewrite([&](nlohmann::json& h) {
                 auto& last = h["records"].back();
                 last["bytes"] = header_offset - last["offset"].get<uint64_t>() + 1;  // one byte into the header
               }),
               "outside the file's records");
  expect_error(rewrite([](nlohmann::json& h) { h["records"][0]["kind"] = "f64"; }), "unknown kind 'f64'");
  expect_error(rewrite([](nlohmann::json& h) { h["records"][1]["name"] = h["records"][0]["name"]; }), "two records named");
  expect_error(rewrite([](nlohmann::json& h) { h["records"][0]["offset"] = "64"; }), "field 'offset': must be an integer");
  expect_error(rewrite([](nlohmann::json& h) { h["records"].erase(1); }), "belong to no record");
  expect_error(rewrite([](nlohmann::json& h) { h["metadata"]["model_config"]["rope_style"] = "sideways"; }), "rope_style 'sideways' is not interleaved");
  // JSON nested 200,000 deep (with valid checksums) is refused before anything is built from it.
  expect_error(with_header(std::string(200000, '[') + std::string(200000, ']')), "nests deeper than 64");
  expect_error(with_header(R"({"records": [], "records": []})"), "duplicate key 'records'");
}

}  // namespace
}  // namespace baq::test
