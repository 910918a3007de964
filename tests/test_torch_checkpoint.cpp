// pytorch_model.bin: checkpoints written by the test (tests/torch_writer.cpp, built opcode by opcode
// like torch.save's pickler) load to the same forward as the same weights in safetensors; hostile,
// truncated, deeply nested and inconsistent files are refused with one line naming file and problem.
// The shared transformers-written checkpoint is checked in test_real_models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/model.hpp"
#include "io/torch_pickle.hpp"
#include "io/zip_archive.hpp"
#include "test_util.hpp"
#include "torch_writer.hpp"

namespace baq::test {
namespace {

namespace fs = std::filesystem;

class TorchCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    c = small_llama(/*dim=*/32, /*hidden=*/48, /*layers=*/2, /*heads=*/4, /*kv_heads=*/2, /*vocab=*/40, /*context=*/16,
                    /*tied=*/false);
    random_weights(c, 7, w, s);
  }

  // The final hidden states of a folder's model on a fixed token sequence.
  std::vector<float> hidden_of(const std::string& folder) const {
    const LoadedModel m = load_model(folder, "", false);
    const std::vector<int> tokens = {1, 5, 9, 3, 39, 0, 17};
    std::vector<float> h(tokens.size() * static_cast<size_t>(c.dim));
    m.model->forward(tokens, BatchShape{1, static_cast<int>(tokens.size())}, h.data());
    return h;
  }

  // A folder holding config.json and a pytorch_model.bin.
  fs::path torch_folder(const std::string& name, const std::string& storage_type = "FloatStorage", bool zip64 = false) {
    const fs::path f = dir.path() / name;
    fs::create_directories(f);
    write_bytes((f / "config.json").string(), hf_config_json(c));
    write_torch_checkpoint((f / "pytorch_model.bin").string(), w, s, storage_type, "archive", zip64);
    return f;
  }

  ModelConfig c;
  Weights w;
  Shapes s;
  TempDir dir;
};

TEST_F(TorchCheckpoint, ForwardEqualsSafetensorsInEveryDtype) {
  for (const auto& [storage, dtype] : {std::pair{"FloatStorage", "F32"}, {"HalfStorage", "F16"}, {"BFloat16Storage", "BF16"}}) {
    SCOPED_TRACE(storage);
    const fs::path st = dir.path() / (std::string("st-") + dtype);
    write_hf_folder(st, c, w, s, dtype);
    const fs::path pt = torch_folder(std::string("pt-") + dtype, storage);
    const LoadedModel m = load_model(pt.string(), "", false);
    EXPECT_EQ(m.format, "Hugging Face pytorch_model.bin");
    EXPECT_EQ(m.source->tensors().size(), w.size());
    EXPECT_EQ(hidden_of(pt.string()), hidden_of(st.string()));
  }
}

TEST_F(TorchCheckpoint, Zip64AndBareFileAndOtherArchiveNames) {
  const fs::path st = dir.path() / "st";
  write_hf_folder(st, c, w, s);
  const auto reference = hidden_of(st.string());
  EXPECT_EQ(hidden_of(torch_folder("z64", "FloatStorage", /*zip64=*/true).string()), reference);

  // A bare .bin with config.json beside it, archived under another folder name (torch uses the file stem).
  const fs::path bare = dir.path() / "bare";
  fs::create_directories(bare);
  write_bytes((bare / "config.json").string(), hf_config_json(c));
  write_torch_checkpoint((bare / "weights.bin").string(), w, s, "FloatStorage", "weights");
  const LoadedModel m = load_model((bare / "weights.bin").string(), "", false);
  EXPECT_EQ(m.format, "torch.save zip");
  EXPECT_NE(m.source->describe().find("weights/data.pkl"), std::string::npos) << m.source->describe();
}

TEST_F(TorchCheckpoint, StridedSharedAndOffsetStoragesReadAsTorchWould) {
  // One storage holding [A | B]: A (2x3) row-major at offset 0, B^T as a (3x2) view with strides (1, 3)
  // at offset 6; a scalar-stride-0 broadcast row. Expected values computed by hand below.
  const std::vector<double> storage = {1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60};
  std::vector<TorchTensorSpec> specs = {
      {"a", "FloatStorage", "0", 12, 0, {2, 3}, {}},
      {"bt", "FloatStorage", "0", 12, 6, {3, 2}, {1, 3}},
      {"bcast", "HalfStorage", "1", 1, 0, {2, 3}, {0, 0}},
  };
  write_torch_zip(dir.file("v.bin"), {{"v/data.pkl", torch_state_dict_pickle(specs)},
                                      {"v/data/0", storage_bytes(storage, "FloatStorage")},
                                      {"v/data/1", storage_bytes({0.5}, "HalfStorage")}});
  TorchCheckpointReader r(dir.file("v.bin"));
  const Tensor a = r.load("a"), bt = r.load("bt"), bc = r.load("bcast");
  EXPECT_EQ(std::vector<float>(a.data, a.data + 6), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  // B = [[10, 20, 30], [40, 50, 60]] so B^T = [[10, 40], [20, 50], [30, 60]].
  EXPECT_EQ(std::vector<float>(bt.data, bt.data + 6), (std::vector<float>{10, 40, 20, 50, 30, 60}));
  EXPECT_EQ(bt.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::vector<float>(bc.data, bc.data + 6), std::vector<float>(6, 0.5f));
}

TEST_F(TorchCheckpoint, ShardedIndexLoadsAsOne) {
  const fs::path one = torch_folder("one");
  const fs::path sharded = dir.path() / "sharded";
  fs::create_directories(sharded);
  write_bytes((sharded / "config.json").string(), hf_config_json(c));
  Weights first, second;
  Shapes s1, s2;
  int i = 0;
  nlohmann::json index;
  for (const auto& [name, v] : w) {
    const bool a = i++ % 2 == 0;
    (a ? first : second)[name] = v;
    (a ? s1 : s2)[name] = s.at(name);
    index["weight_map"][name] = a ? "pytorch_model-00001-of-00002.bin" : "pytorch_model-00002-of-00002.bin";
  }
  write_torch_checkpoint((sharded / "pytorch_model-00001-of-00002.bin").string(), first, s1);
  write_torch_checkpoint((sharded / "pytorch_model-00002-of-00002.bin").string(), second, s2);
  write_bytes((sharded / "pytorch_model.bin.index.json").string(), index.dump());
  const LoadedModel m = load_model(sharded.string(), "", false);
  EXPECT_EQ(m.format, "Hugging Face sharded pytorch_model.bin");
  EXPECT_NE(m.source->describe().find("2 shards"), std::string::npos);
  EXPECT_EQ(hidden_of(sharded.string()), hidden_of(one.string()));

  index["weight_map"]["model.norm.weight"] = "../elsewhere.bin";
  write_bytes((sharded / "pytorch_model.bin.index.json").string(), index.dump());
  expect_error([&] { load_model(sharded.string(), "", false); }, {"pytorch_model.bin.index.json", "plain file name"});
}

// A pickle that would run `command` if a real unpickler loaded it: GLOBAL + REDUCE.
std::string calling_pickle(const std::string& module, const std::string& name, const std::string& argument) {
  PickleBuilder p;
  p.proto().global(module, name).mark().str(argument).op('t').op('R').stop();
  return p.bytes();
}

TEST_F(TorchCheckpoint, CodeRunningGlobalsAreRefusedByNameAndNeverRun) {
  const std::string marker = dir.file("pwned");
  const std::string touch = "touch " + marker;
  struct Case {
    std::string pickle, named;
  };
  PickleBuilder stack_global;  // protocol 4 spelling: STACK_GLOBAL from two strings
  stack_global.proto(4).str("posix").str("system").op(0x93).mark().str(touch).op('t').op('R').stop();
  PickleBuilder nested;  // hidden inside an otherwise valid state dict value
  nested.proto().op('}').str("model.norm.weight").global("builtins", "exec").mark().str("import os").op('t').op('R').op('s').stop();
  const std::vector<Case> cases = {
      {calling_pickle("os", "system", touch), "'os.system'"},
      {calling_pickle("builtins", "eval", "__import__('os').system('" + touch + "')"), "'builtins.eval'"},
      {calling_pickle("subprocess", "check_output", touch), "'subprocess.check_output'"},
      {calling_pickle("subprocess", "Popen", touch), "'subprocess.Popen'"},
      {stack_global.bytes(), "'posix.system'"},
      {nested.bytes(), "'builtins.exec'"},
      {calling_pickle("torch", "load", "x"), "'torch.load'"},
      {calling_pickle("collections", "defaultdict", "x"), "'collections.defaultdict'"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.named);
    write_torch_zip(dir.file("evil.bin"), {{"archive/data.pkl", k.pickle}});
    expect_error([&] { TorchCheckpointReader r(dir.file("evil.bin")); }, {"evil.bin", "refuses global", k.named});
  }
  EXPECT_FALSE(fs::exists(marker));

  // Through the CLI: one line, exit 1, nothing run.
  const fs::path folder = torch_folder("evil");
  write_torch_zip((folder / "pytorch_model.bin").string(), {{"archive/data.pkl", calling_pickle("os", "system", touch)}});
  const CommandResult r = run_command(std::string(BAQ_BINARY) + " info " + folder.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("baq: error: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pytorch_model.bin"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("'os.system'"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(fs::exists(marker));
}

TEST_F(TorchCheckpoint, ObjectBuildingOpcodesAreRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("\x80\x02(ios\nsystem\nX\x02\x00\x00\x00idb.", 23), "INST"},
      {std::string("\x80\x02\x82\x01.", 5), "extension-registry"},
      {std::string("\x80\x02)\x81.", 5), "NEWOBJ"},
      {std::string("\x80\x02P1\n.", 6), "PERSID"},
      {std::string("\x80\x02\xff.", 4), "unsupported pickle opcode 0xff"},
      {std::string("\x80\x07}.", 4), "protocol 7"},
  };
  for (const auto& [pickle, fragment] : cases) {
    SCOPED_TRACE(fragment);
    expect_error([&] { read_torch_state_dict_pickle(pickle, "p.pkl"); }, {"p.pkl", fragment});
  }
}

TEST_F(TorchCheckpoint, TruncatedPicklesAndArchivesFailCleanly) {
  std::vector<TorchTensorSpec> specs = {{"x", "FloatStorage", "0", 4, 0, {2, 2}, {}}};
  const std::string good = torch_state_dict_pickle(specs);
  ASSERT_EQ(read_torch_state_dict_pickle(good, "p").size(), 1u);
  for (size_t n = 0; n < good.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_THROW(read_torch_state_dict_pickle(good.substr(0, n), "p"), Error);
  }
  expect_error([&] { read_torch_state_dict_pickle(good.substr(0, 20), "cut.pkl"); }, {"cut.pkl", "truncated"});

  write_torch_zip(dir.file("ok.bin"), {{"archive/data.pkl", good}, {"archive/data/0", storage_bytes({1, 2, 3, 4}, "FloatStorage")}});
  const std::string bytes = read_bytes(dir.file("ok.bin"));
  for (size_t n : {size_t{0}, size_t{3}, size_t{30}, bytes.size() / 2, bytes.size() - 23, bytes.size() - 1}) {
    SCOPED_TRACE(n);
    write_bytes(dir.file("cut.bin"), bytes.substr(0, n));
    EXPECT_THROW(TorchCheckpointReader r(dir.file("cut.bin")), Error);
  }
}

TEST_F(TorchCheckpoint, NestingDeeperThanTheBoundIsRefused) {
  const int deep = kMaxPickleDepth + 10;
  std::string marks = "\x80\x02" + std::string(static_cast<size_t>(deep), '(');
  expect_error([&] { read_torch_state_dict_pickle(marks, "m.pkl"); }, {"m.pkl", "deeper than"});
  // Lists inside lists: ] ] ] ... a a a (each APPEND puts the inner list into the one below it).
  std::string lists = "\x80\x02" + std::string(static_cast<size_t>(deep), ']') + std::string(static_cast<size_t>(deep - 1), 'a') + ".";
  expect_error([&] { read_torch_state_dict_pickle(lists, "l.pkl"); }, {"l.pkl", "deeper than"});
  // Tuples: 1-tuples of 1-tuples.
  std::string tuples = "\x80\x02N" + std::string(static_cast<size_t>(deep), '\x85') + ".";
  expect_error([&] { read_torch_state_dict_pickle(tuples, "t.pkl"); }, {"t.pkl", "deeper than"});
  // A list appended to itself is legal pickle; it must neither recurse nor leak.
  expect_error([&] { read_torch_state_dict_pickle(std::string("\x80\x02]q\x00h\x00" "a.", 9), "self.pkl"); },
               {"self.pkl", "not a state dict"});
  // Within the bound, nesting is fine as long as the result is a state dict.
  EXPECT_TRUE(read_torch_state_dict_pickle(std::string("\x80\x02}]]a0.", 8), "ok.pkl").empty());
}

TEST_F(TorchCheckpoint, InconsistentStoragesAreRefused) {
  auto archive = [&](const std::vector<TorchTensorSpec>& specs, const std::string& data0) {
    write_torch_zip(dir.file("x.bin"), {{"archive/data.pkl", torch_state_dict_pickle(specs)}, {"archive/data/0", data0}});
    return dir.file("x.bin");
  };
  const std::string four = storage_bytes({1, 2, 3, 4}, "FloatStorage");
  expect_error([&] { TorchCheckpointReader r(archive({{"x", "FloatStorage", "0", 4, 1, {2, 2}, {}}}, four)); },
               {"x.bin", "element 4 of a 4-element storage"});
  expect_error([&] { TorchCheckpointReader r(archive({{"x", "FloatStorage", "0", 8, 0, {2, 2}, {}}}, four)); },
               {"x.bin", "holds 16 bytes", "need 32"});
  expect_error([&] { TorchCheckpointReader r(archive({{"x", "FloatStorage", "1", 4, 0, {2, 2}, {}}}, four)); },
               {"x.bin", "archive/data/1", "lacks"});
  expect_error([&] { TorchCheckpointReader r(archive({{"x", "FloatStorage", "../0", 4, 0, {2, 2}, {}}}, four)); },
               {"x.bin", "storage key"});
  expect_error(
      [&] {
        TorchCheckpointReader r(
            archive({{"x", "FloatStorage", "0", 4, 0, {2, 2}, {}}, {"y", "HalfStorage", "0", 8, 0, {2}, {}}}, four));
      },
      {"x.bin", "storage '0' is declared as FloatStorage of 4 and as HalfStorage of 8"});
  expect_error([&] { TorchCheckpointReader r(archive({{"x", "FloatStorage", "0", 4, 0, {2, 2}, {}}, {"x", "FloatStorage", "0", 4, 0, {4}, {}}}, four)); },
               {"x.bin", "'x' twice"});
  expect_error([&] { TorchCheckpointReader r(archive({{"x", "FloatStorage", "0", 4, 0, {int64_t{1} << 40, int64_t{1} << 40}, {}}}, four)); },
               {"x.bin", "overflow"});
  const float nan = std::nanf("");
  std::string with_nan = four;
  std::memcpy(with_nan.data() + 8, &nan, 4);
  TorchCheckpointReader r(archive({{"x", "FloatStorage", "0", 4, 0, {2, 2}, {}}}, with_nan));
  EXPECT_EQ(r.load("x").first_non_finite(), 2);  // viewed as stored; NaN is found where values are used
}

TEST_F(TorchCheckpoint, ArchiveLevelDamageIsNamed) {
  std::vector<TorchTensorSpec> specs = {{"x", "FloatStorage", "0", 4, 0, {2, 2}, {}}};
  const std::string pickle = torch_state_dict_pickle(specs);
  const std::string data = storage_bytes({1, 2, 3, 4}, "FloatStorage");
  write_torch_zip(dir.file("ok.bin"), {{"archive/data.pkl", pickle}, {"archive/data/0", data}});
  std::string bytes = read_bytes(dir.file("ok.bin"));
  // Flip a byte of data.pkl: its CRC-32 no longer matches.
  const size_t at = bytes.find(pickle.substr(0, 16));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5] ^= 0x20;
  write_bytes(dir.file("crc.bin"), bytes);
  expect_error([&] { TorchCheckpointReader r(dir.file("crc.bin")); }, {"crc.bin", "data.pkl", "CRC-32"});

  write_torch_zip(dir.file("nopkl.bin"), {{"archive/data/0", data}});
  expect_error([&] { TorchCheckpointReader r(dir.file("nopkl.bin")); }, {"nopkl.bin", "data.pkl"});
  write_torch_zip(dir.file("big.bin"), {{"archive/data.pkl", pickle}, {"archive/data/0", data}, {"archive/byteorder", "big"}});
  expect_error([&] { TorchCheckpointReader r(dir.file("big.bin")); }, {"big.bin", "big-endian"});
  // The pre-1.6 format begins with a pickled magic number.
  write_bytes(dir.file("legacy.bin"), std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15));
  EXPECT_TRUE(TorchCheckpointReader::looks_like(dir.file("legacy.bin")));
  expect_error([&] { TorchCheckpointReader r(dir.file("legacy.bin")); }, {"legacy.bin", "legacy", "safetensors"});
  // A top-level that is not a dict, and a non-tensor value.
  write_torch_zip(dir.file("list.bin"), {{"archive/data.pkl", std::string("\x80\x02].", 4)}});
  expect_error([&] { TorchCheckpointReader r(dir.file("list.bin")); }, {"list.bin", "a list, not a state dict"});
  write_torch_zip(dir.file("int.bin"), {{"archive/data.pkl", std::string("\x80\x02}X\x01\x00\x00\x00" "aK\x05s.", 13)}});
  expect_error([&] { TorchCheckpointReader r(dir.file("int.bin")); }, {"int.bin", "'a' is an int, not a tensor"});
}

// Pickles written by CPython's own Pickler the way torch.save drives it (tests/fuzz/make_seeds.py,
// also the fuzz seeds): protocol 2 as torch writes, and protocol 4 (STACK_GLOBAL, MEMOIZE, FRAME).
TEST_F(TorchCheckpoint, PicklesWrittenByCPythonRead) {
  const std::string seeds = std::string(BAQ_SOURCE_DIR) + "/tests/fuzz/seeds/";
  for (const char* file : {"state_dict_protocol2.pkl", "state_dict_protocol4.pkl"}) {
    SCOPED_TRACE(file);
    const auto records = read_torch_state_dict_pickle(read_bytes(seeds + file), file);
    ASSERT_EQ(records.size(), 3u);
    EXPECT_EQ(records[0].name, "model.layers.0.self_attn.q_proj.weight");
    EXPECT_EQ(records[0].storage_type, "FloatStorage");
    EXPECT_EQ(records[0].storage_key, "0");
    EXPECT_EQ(records[0].storage_numel, 12);
    EXPECT_EQ(records[0].shape, (std::vector<int64_t>{3, 4}));
    EXPECT_EQ(records[1].stride, (std::vector<int64_t>{1, 4}));
    EXPECT_EQ(records[2].name, "model.norm.weight");
    EXPECT_EQ(records[2].storage_type, "HalfStorage");
    EXPECT_EQ(records[2].offset, 1);
  }
  // The same state dict zipped by Python's zipfile: q = 0.25·i, k = its transposed view, norm = [-2, 0.5, 3].
  TorchCheckpointReader r(seeds + "checkpoint.zip");
  const Tensor q = r.load("model.layers.0.self_attn.q_proj.weight");
  const Tensor k = r.load("model.layers.0.self_attn.k_proj.weight");
  const Tensor n = r.load("model.norm.weight");
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) {
      EXPECT_EQ(q.data[i * 4 + j], 0.25f * static_cast<float>(i * 4 + j));
      EXPECT_EQ(k.data[j * 3 + i], q.data[i * 4 + j]);
    }
  EXPECT_EQ(std::vector<float>(n.data, n.data + 3), (std::vector<float>{-2.0f, 0.5f, 3.0f}));
  expect_error([&] { read_torch_state_dict_pickle(read_bytes(seeds + "os_system.pkl"), "os_system.pkl"); },
               {"os_system.pkl", "'os.system'"});
}

TEST_F(TorchCheckpoint, IntegerBuffersAreListedNotLoaded) {
  std::vector<TorchTensorSpec> specs = {{"w", "FloatStorage", "0", 4, 0, {2, 2}, {}},
                                        {"position_ids", "LongStorage", "1", 3, 0, {1, 3}, {}}};
  write_torch_zip(dir.file("b.bin"), {{"archive/data.pkl", torch_state_dict_pickle(specs)},
                                      {"archive/data/0", storage_bytes({1, 2, 3, 4}, "FloatStorage")},
                                      {"archive/data/1", std::string(24, '\0')}});
  TorchCheckpointReader r(dir.file("b.bin"));
  EXPECT_TRUE(r.contains("w"));
  EXPECT_FALSE(r.contains("position_ids"));
  EXPECT_NE(r.describe().find("1 non-float tensors not loaded: position_ids (LongStorage)"), std::string::npos) << r.describe();
}

}  // namespace
}  // namespace baq::test
