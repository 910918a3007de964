#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <queue>

#include <nlohmann/json.hpp>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/tokenizer.hpp"

namespace baq {

Llama2cTokenizer::Llama2cTokenizer(const std::string& path, int vocab_size)
    : Llama2cTokenizer(read_binary_file(path), path, vocab_size) {}

Llama2cTokenizer::Llama2cTokenizer(std::string_view bytes, const std::string& source, int vocab_size) : path_(source) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint64_t size = bytes.size();
  uint64_t pos = 0;
  auto read = [&](void* dst, uint64_t n, const char* what) {
    if (size - pos < n) fail("{}: truncated tokenizer while reading {} of piece {}", source, what, pieces_.size());
    std::memcpy(dst, p + pos, n);
    pos += n;
  };
  int32_t max_len = 0;
  read(&max_len, 4, "the header");
  if (max_len <= 0 || max_len > 4096) fail("{}: not a llama2.c tokenizer (max token length {})", source, max_len);
  // The file does not store its size: every piece it holds is read, and the count must be the model's.
  while (pos < size) {
    float score;
    int32_t len;
    read(&score, 4, "a score");
    read(&len, 4, "a length");
    if (len < 0 || len > max_len) fail("{}: piece {} has length {} (max {})", source, pieces_.size(), len, max_len);
    std::string piece(static_cast<size_t>(len), '\0');
    read(piece.data(), static_cast<uint64_t>(len), "a piece");
    if (!std::isfinite(score)) fail("{}: piece {} has a non-finite score", source, pieces_.size());
    pieces_.push_back(std::move(piece));
    scores_.push_back(score);
  }
  if (vocab_size > 0 && static_cast<int>(pieces_.size()) != vocab_size)
    fail("{}: holds {} pieces but the model's vocabulary has {} tokens (a tokenizer of another model?)", source,
         pieces_.size(), vocab_size);
  if (pieces_.size() < 259) fail("{}: {} pieces cannot hold the 3 specials + 256 byte tokens", source, pieces_.size());
  index_pieces();
  set_files({{"tokenizer.bin", std::string(bytes), source}});
}

void Llama2cTokenizer::index_pieces() {
  for (size_t i = 0; i < pieces_.size(); ++i) ids_.emplace(pieces_[i], static_cast<int>(i));  // first id wins
  for (int b = 0; b < 256; ++b) {
    auto it = ids_.find(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = it != ids_.end() ? it->second : b + 3;
  }
}

std::unique_ptr<Llama2cTokenizer> Llama2cTokenizer::from_sentencepiece_json(const nlohmann::json& j,
                                                                            const std::string& path) {
  if (!j.contains("model") || !j["model"].is_object()) fail("{}: no 'model' object", path);
  const auto& model = j["model"];
  if (!model.contains("vocab") || !model["vocab"].is_object() || !model.contains("merges") || !model["merges"].is_array())
    fail("{}: model.vocab or model.merges missing", path);
  const auto spaced = sentencepiece_piece_to_text;
  int max_id = -1;
  for (const auto& [tok, id] : model["vocab"].items())
    max_id = std::max(max_id, static_cast<int>(json_as_int(id, path + ": model.vocab id of '" + tok + "'", 0, 1 << 24)));
  std::vector<std::string> pieces(static_cast<size_t>(max_id) + 1);
  std::vector<char> seen(pieces.size(), 0);
  for (const auto& [tok, id] : model["vocab"].items()) {
    const auto i = static_cast<size_t>(id.get<int>());
    if (seen[i]++) fail("{}: model.vocab gives id {} to two tokens", path, i);
    pieces[i] = spaced(tok);
  }
  auto t = std::make_unique<Llama2cTokenizer>(std::move(pieces), std::vector<float>(static_cast<size_t>(max_id) + 1, 0.0f),
                                              path);
  int rank = 0;
  for (const auto& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) fail("{}: merge '{}' has no space", path, s);
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else {
      a = m.at(0).get<std::string>(), b = m.at(1).get<std::string>();
    }
    t->pair_score_.emplace(spaced(a) + '\x01' + spaced(b), -static_cast<float>(rank++));
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& a : j["added_tokens"]) {
      const std::string content = json_string_or(a, "content", path + ": added_tokens entry", "");
      const int id = static_cast<int>(json_int_or(a, "id", path + ": added_tokens entry", -1, 1 << 24, -1));
      // Only tokens added beyond the vocabulary are matched literally: SentencePiece spells a literal
      // "<unk>" or "<s>" in text as ordinary pieces, and so must we.
      if (content.empty() || id <= max_id) continue;
      if (static_cast<size_t>(id) >= t->pieces_.size()) {
        t->pieces_.resize(static_cast<size_t>(id) + 1);
        t->scores_.resize(t->pieces_.size(), 0.0f);
      }
      t->pieces_[static_cast<size_t>(id)] = content;
      t->added_tokens_.emplace_back(content, id);
    }
  std::stable_sort(t->added_tokens_.begin(), t->added_tokens_.end(),
                   [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  return t;
}

std::string sentencepiece_piece_to_text(std::string_view p) {
  static constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, kSpace.size(), kSpace) == 0) {
      out.push_back(' ');
      i += kSpace.size();
    } else {
      out.push_back(p[i++]);
    }
  }
  return out;
}

Llama2cTokenizer::Llama2cTokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::string source)
    : path_(std::move(source)), pieces_(std::move(pieces)), scores_(std::move(scores)) {
  if (scores_.size() != pieces_.size()) fail("{}: {} scores for {} pieces", path_, scores_.size(), pieces_.size());
  if (pieces_.size() < 259) fail("{}: {} pieces cannot hold the 3 specials + 256 byte tokens", path_, pieces_.size());
  index_pieces();
  set_files({{"tokenizer.bin", serialize(), path_}});
}

std::vector<int> Llama2cTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> tokens;
  if (add_bos) tokens.push_back(bos_id());
  // Added tokens split the text; only its start gets the dummy-prefix space.
  size_t plain = 0;
  bool first = true;
  for (size_t i = 0; i < text.size() && !added_tokens_.empty();) {
    bool matched = false;
    for (const auto& [tok, id] : added_tokens_)
      if (text.compare(i, tok.size(), tok) == 0) {
        encode_segment(text.substr(plain, i - plain), first, tokens);
        tokens.push_back(id);
        i += tok.size();
        plain = i;
        first = false;
        matched = true;
        break;
      }
    if (!matched) ++i;
  }
  encode_segment(text.substr(plain), first, tokens);
  return tokens;
}

void Llama2cTokenizer::encode_segment(std::string_view text, bool dummy_prefix, std::vector<int>& tokens) const {
  if (text.empty()) return;
  const size_t first = tokens.size();
  if (auto it = ids_.find(" "); dummy_prefix && it != ids_.end()) tokens.push_back(it->second);

  // Code points (up to 4 bytes, continuation bytes glued on) looked up whole; unknown ones fall
  // back to one token per byte, exactly as llama2.c's run.c does, malformed UTF-8 included.
  std::string buf;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) buf.clear();
    buf.push_back(static_cast<char>(c));
    if (i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80 && buf.size() < 4) continue;
    if (auto it = ids_.find(buf); it != ids_.end()) {
      tokens.push_back(it->second);
    } else {
      for (unsigned char b : buf) tokens.push_back(byte_ids_[b]);
    }
    buf.clear();
  }

  // Greedy merging: always the highest-scoring adjacent pair, the leftmost on ties. run.c rescans
  // the whole sequence per merge (quadratic); a heap of candidate pairs over a linked list gives the
  // same sequence of merges in n log n.
  const int n = static_cast<int>(tokens.size() - first);
  std::vector<int> tok(tokens.begin() + static_cast<std::ptrdiff_t>(first), tokens.end());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    float score;
    int left, left_tok, right_tok, merged;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
  std::string key;
  auto consider = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    const int right = next[left];
    key.assign(pieces_[tok[left]]);
    key += pieces_[tok[right]];
    auto it = ids_.find(key);
    if (it == ids_.end()) return;
    float score = scores_[it->second];
    if (!pair_score_.empty()) {  // tokenizer.json: only listed merges, by rank
      auto pit = pair_score_.find(pieces_[tok[left]] + '\x01' + pieces_[tok[right]]);
      if (pit == pair_score_.end()) return;
      score = pit->second;
    }
    if (!(score > -1e10f)) return;
    heap.push({score, left, tok[left], tok[right], it->second});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (!alive[c.left] || tok[c.left] != c.left_tok) continue;
    const int right = next[c.left];
    if (right < 0 || tok[right] != c.right_tok) continue;
    tok[c.left] = c.merged;
    alive[right] = 0;
    next[c.left] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.left;
    consider(prev[c.left]);
    consider(c.left);
  }
  tokens.resize(first);
  for (int i = 0; i >= 0 && n > 0; i = next[i]) tokens.push_back(tok[i]);
}

std::string Llama2cTokenizer::serialize() const {
  std::string out;
  auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  int32_t max_len = 1;
  for (const auto& p : pieces_) max_len = std::max(max_len, static_cast<int32_t>(p.size()));
  put(&max_len, 4);
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const auto len = static_cast<int32_t>(pieces_[i].size());
    put(&scores_[i], 4);
    put(&len, 4);
    put(pieces_[i].data(), pieces_[i].size());
  }
  return out;
}

std::string Llama2cTokenizer::decode(int id) const {
  if (id < 0 || id >= vocab_size()) return {};
  const std::string& piece = pieces_[static_cast<size_t>(id)];
  unsigned byte = 0;
  if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1) return std::string(1, static_cast<char>(byte));
  return piece;
}

std::string Llama2cTokenizer::describe() const {
  return fmt::format("llama2.c tokenizer {} ({} pieces)", std::filesystem::path(path_).filename().string(),
                     pieces_.size());
}

}  // namespace baq
