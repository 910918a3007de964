#include "tokenizer/tokenizer_pipeline.hpp"
#include "tokenizer/utf8.hpp"

namespace baq {

namespace {

struct Span {
  size_t begin, end;
  bool delimiter;
};

// The piece cut at every delimiter `hits` (sorted, disjoint), kept as `behavior` says.
void split_piece(const std::string& piece, const std::vector<std::pair<size_t, size_t>>& hits, SplitBehavior behavior,
                 bool invert, std::vector<std::string>& out) {
  std::vector<Span> spans;
  size_t at = 0;
  for (const auto& [b, e] : hits) {
    if (b > at) spans.push_back({at, b, invert});
    spans.push_back({b, e, !invert});
    at = e;
  }
  if (at < piece.size()) spans.push_back({at, piece.size(), invert});
  auto text = [&](const Span& s) { return piece.substr(s.begin, s.end - s.begin); };
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const Span& s : spans)
        if (!s.delimiter) out.push_back(text(s));
      break;
    case SplitBehavior::Isolated:
      for (const Span& s : spans) out.push_back(text(s));
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool open = false;  // whether the last output piece came from this piece and may take a delimiter
      for (const Span& s : spans) {
        if (s.delimiter && open) out.back() += text(s);
        else out.push_back(text(s));
        open = !s.delimiter;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      // Mirror of the above: a delimiter joins the piece after it unless that piece is a delimiter.
      std::vector<std::string> reversed;
      bool open = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->delimiter && open) reversed.back().insert(0, text(*it));
        else reversed.push_back(text(*it));
        open = !it->delimiter;
      }
      out.insert(out.end(), reversed.rbegin(), reversed.rend());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool last_delim = false;
      size_t last_end = 0;
      for (const Span& s : spans) {
        if (s.delimiter && last_delim && last_end == s.begin) out.back() += text(s);
        else out.push_back(text(s));
        last_delim = s.delimiter;
        last_end = s.end;
      }
      break;
    }
  }
}

std::vector<std::pair<size_t, size_t>> literal_hits(const std::string& piece, const std::string& literal) {
  std::vector<std::pair<size_t, size_t>> hits;
  if (literal.empty()) return hits;
  for (size_t at = 0; (at = piece.find(literal, at)) != std::string::npos; at += literal.size())
    hits.emplace_back(at, at + literal.size());
  return hits;
}

}  // namespace

const std::string& gpt2_split_pattern() {
  static const std::string pattern =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  return pattern;
}

void PreTokenizer::apply(std::vector<std::string>& pieces, bool first_segment) const {
  std::vector<std::string> out;
  out.reserve(pieces.size());
  switch (kind) {
    case Kind::Split:
      for (const std::string& p : pieces)
        split_piece(p, pattern ? pattern->matches(p) : literal_hits(p, literal), behavior, invert, out);
      break;
    case Kind::WhitespaceSplit:
      for (const std::string& p : pieces) {
        size_t i = 0;
        while (i < p.size()) {
          while (i < p.size() && std::isspace(static_cast<unsigned char>(p[i]))) ++i;
          size_t j = i;
          while (j < p.size() && !std::isspace(static_cast<unsigned char>(p[j]))) ++j;
          if (j > i) out.push_back(p.substr(i, j - i));
          i = j;
        }
      }
      break;
    case Kind::ByteLevel: {
      const ByteAlphabet& alphabet = ByteAlphabet::get();
      for (std::string p : pieces) {
        if (add_prefix_space && !p.starts_with(' ')) p = std::string(1, ' ') + p;
        std::vector<std::string> split;
        if (use_regex) {
          static const Pattern gpt2(gpt2_split_pattern(), "ByteLevel");
          split_piece(p, gpt2.matches(p), SplitBehavior::Isolated, false, split);
        } else {
          split.push_back(std::move(p));
        }
        for (const std::string& s : split) out.push_back(alphabet.map(s));
      }
      break;
    }
    case Kind::Metaspace:
      for (size_t i = 0; i < pieces.size(); ++i) {
        std::string p;
        for (char c : pieces[i]) {
          if (c == ' ') p += replacement;
          else p += c;
        }
        const bool prepend_here = prepend == "always" || (prepend == "first" && first_segment && i == 0);
        if (prepend_here && !p.starts_with(replacement)) p.insert(0, replacement);
        if (split) split_piece(p, literal_hits(p, replacement), SplitBehavior::MergedWithNext, false, out);
        else out.push_back(std::move(p));
      }
      break;
  }
  // Empty pieces carry nothing to encode.
  std::erase_if(out, [](const std::string& s) { return s.empty(); });
  pieces = std::move(out);
}

std::string ByteAlphabet::unmap(std::string_view text) const {
  std::string out;
  for (std::string_view c : utf8_chars(text)) {
    auto it = byte_of.find(std::string(c));
    if (it != byte_of.end()) out += it->second;
    else out += c;
  }
  return out;
}

}  // namespace baq
