#include <fmt/format.h>

#include <queue>

#include "tokenizer/tokenizer_pipeline.hpp"
#include "tokenizer/utf8.hpp"

namespace baq {

void BpeModel::index_bytes() {
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(fmt::format("<0x{:02X}>", b));
    byte_token[b] = it == vocab.end() ? -1 : it->second;
  }
}

void BpeModel::add_merge(const std::string& left, const std::string& right) {
  merge_rank.emplace(left + '\x01' + right, static_cast<int>(merges++));
}

int BpeModel::rank(std::string_view left, std::string_view right) const {
  std::string key;
  key.reserve(left.size() + right.size() + 1);
  key.append(left);
  if (ranks_from_vocab) {
    key.append(right);
    auto it = vocab.find(key);
    return it == vocab.end() ? -1 : it->second;
  }
  key += '\x01';
  key.append(right);
  auto it = merge_rank.find(key);
  return it == merge_rank.end() ? -1 : it->second;
}

void BpeModel::encode_word(std::string_view word, std::vector<int>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    auto it = vocab.find(std::string(word));
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols are byte ranges of the word in a linked list; the lowest-ranked adjacent pair is merged
  // first, the leftmost among equal ranks (as `tokenizers` and llama.cpp do). A queued pair whose
  // symbols changed since it was queued is stale and skipped.
  struct Symbol {
    size_t begin, len;
    int prev, next;
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
    const int k = static_cast<int>(sym.size());
    sym.push_back({i, n, k - 1, -1});
    if (k > 0) sym[k - 1].next = k;
    i += n;
  }
  struct Pair {
    int rank, left;
    size_t left_len, right_len;
  };
  auto later = [](const Pair& a, const Pair& b) { return a.rank != b.rank ? a.rank > b.rank : a.left > b.left; };
  std::priority_queue<Pair, std::vector<Pair>, decltype(later)> queue(later);
  auto text = [&](int s) { return word.substr(sym[s].begin, sym[s].len); };
  auto push = [&](int left) {
    if (left < 0 || sym[left].next < 0) return;
    const int right = sym[left].next;
    const int r = rank(text(left), text(right));
    if (r >= 0) queue.push({r, left, sym[left].len, sym[right].len});
  };
  for (int s = 0; s + 1 < static_cast<int>(sym.size()); ++s) push(s);
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Symbol& l = sym[p.left];
    if (l.len != p.left_len || l.len == 0 || l.next < 0 || sym[l.next].len != p.right_len) continue;
    Symbol& r = sym[l.next];
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (l.next >= 0) sym[l.next].prev = p.left;
    push(l.prev);
    push(p.left);
  }
  bool last_unk = false;
  for (int s = 0; s >= 0 && s < static_cast<int>(sym.size()); s = sym[s].next) {
    const std::string_view piece = text(s);
    auto it = vocab.find(std::string(piece));
    if (it != vocab.end()) {
      out.push_back(it->second);
      last_unk = false;
    } else if (byte_fallback && byte_token[static_cast<unsigned char>(piece[0])] >= 0) {
      for (unsigned char b : piece) out.push_back(byte_token[b]);
      last_unk = false;
    } else if (unk_id >= 0) {
      if (!(fuse_unk && last_unk)) out.push_back(unk_id);
      last_unk = true;
    } else {
      // No token, no fallback: its single characters where they exist (llama.cpp's behaviour).
      for (std::string_view c : utf8_chars(piece))
        if (auto jt = vocab.find(std::string(c)); jt != vocab.end()) out.push_back(jt->second);
    }
  }
}

}  // namespace baq
