#pragma once
// UTF-8 helpers the tokenizers share: code point boundaries and encoding.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace baq {

// Length of the code point starting with byte `c` (1 for a stray continuation or invalid byte, so
// arbitrary bytes still make progress).
inline size_t utf8_length(unsigned char c) {
  if (c >= 0xF0 && c < 0xF8) return 4;
  if (c >= 0xE0) return c < 0xF0 ? 3 : 1;
  if (c >= 0xC0) return 2;
  return 1;
}

inline std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// The code points of `s`, each as its bytes (a truncated sequence at the end stays one piece).
inline std::vector<std::string_view> utf8_chars(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::min(utf8_length(static_cast<unsigned char>(s[i])), s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// GPT-2's reversible map of bytes to printable code points (byte-level BPE's alphabet).
struct ByteAlphabet {
  std::string of_byte[256];
  std::unordered_map<std::string, char> byte_of;
  ByteAlphabet() {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      of_byte[b] = utf8_encode(printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + extra++));
      byte_of.emplace(of_byte[b], static_cast<char>(b));
    }
  }
  std::string map(std::string_view bytes) const {
    std::string out;
    for (unsigned char b : bytes) out += of_byte[b];
    return out;
  }
  // The bytes behind mapped text; a code point outside the alphabet is kept as it is.
  std::string unmap(std::string_view text) const;
  static const ByteAlphabet& get() {
    static const ByteAlphabet a;
    return a;
  }
};

}  // namespace baq
