#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <queue>

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
  set_specials({1, true, {2}});  // llama2.c's fixed <s> and </s>
}

void Llama2cTokenizer::index_pieces() {
  for (size_t i = 0; i < pieces_.size(); ++i) ids_.emplace(pieces_[i], static_cast<int>(i));  // first id wins
  for (int b = 0; b < 256; ++b) {
    auto it = ids_.find(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = it != ids_.end() ? it->second : b + 3;
  }
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
  set_specials({1, true, {2}});
}

int Llama2cTokenizer::token_id(std::string_view text) const {
  auto it = ids_.find(std::string(text));
  return it == ids_.end() ? -1 : it->second;
}

// Every run of text gets the dummy-prefix space, the first and those after an added token alike (as
// SentencePiece encodes each piece of a chat separately, and llama.cpp after a special token).
void Llama2cTokenizer::encode_text(std::string_view text, bool, std::vector<int>& tokens) const {
  if (text.empty()) return;
  const size_t first = tokens.size();
  if (auto it = ids_.find(" "); it != ids_.end()) tokens.push_back(it->second);

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
    const float score = scores_[it->second];
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
