// What every tokenizer shares: added tokens matched whole before the model sees the text, and the BOS
// its files ask for.
#include <algorithm>
#include <cctype>
#include <set>

#include "baq/tokenizer.hpp"
#include "tokenizer/utf8.hpp"

namespace baq {

namespace {

bool space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool word_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return std::isalnum(u) || c == '_' || u >= 0x80;
}

}  // namespace

void Tokenizer::set_added_tokens(std::vector<AddedToken> tokens) {
  std::erase_if(tokens, [](const AddedToken& t) { return t.content.empty() || t.id < 0; });
  // Leftmost-longest, as Hugging Face's matcher: at each position the longest token wins.
  std::stable_sort(tokens.begin(), tokens.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  std::set<std::string> seen;
  std::erase_if(tokens, [&](const AddedToken& t) { return !seen.insert(t.content).second; });
  added_ = std::move(tokens);
}

std::vector<int> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int> out;
  if (add_special && adds_bos()) out.push_back(specials_.bos);
  // Which added tokens can start with each byte, longest first.
  bool any = false;
  bool starts[256] = {};
  for (const AddedToken& t : added_)
    if (parse_special || !t.special) any = starts[static_cast<unsigned char>(t.content[0])] = true;
  if (!any) {
    encode_text(text, true, out);
    return out;
  }
  size_t plain = 0;
  auto flush = [&](size_t end) {
    if (end > plain) encode_text(text.substr(plain, end - plain), plain == 0, out);
  };
  for (size_t i = 0; i < text.size();) {
    const AddedToken* hit = nullptr;
    if (starts[static_cast<unsigned char>(text[i])]) {
      for (const AddedToken& t : added_) {
        if ((!parse_special && t.special) || text.compare(i, t.content.size(), t.content) != 0) continue;
        if (t.single_word && ((i > 0 && word_char(text[i - 1])) ||
                              (i + t.content.size() < text.size() && word_char(text[i + t.content.size()]))))
          continue;
        hit = &t;
        break;
      }
    }
    if (hit == nullptr) {
      i += std::min(utf8_length(static_cast<unsigned char>(text[i])), text.size() - i);
      continue;
    }
    size_t run_end = i;
    if (hit->lstrip)
      while (run_end > plain && space(text[run_end - 1])) --run_end;
    flush(run_end);
    out.push_back(hit->id);
    i += hit->content.size();
    if (hit->rstrip)
      while (i < text.size() && space(text[i])) ++i;
    plain = i;
  }
  flush(text.size());
  return out;
}

}  // namespace baq
