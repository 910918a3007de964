#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <cctype>

#include "baq/error.hpp"
#include "tokenizer/tokenizer_pipeline.hpp"

namespace baq {

namespace {

std::string normal_form(const std::string& s, Normalizer::Kind kind) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (kind) {
    case Normalizer::Kind::Nfc: n = icu::Normalizer2::getNFCInstance(err); break;
    case Normalizer::Kind::Nfkc: n = icu::Normalizer2::getNFKCInstance(err); break;
    case Normalizer::Kind::Nfd: n = icu::Normalizer2::getNFDInstance(err); break;
    default: n = icu::Normalizer2::getNFKDInstance(err); break;
  }
  if (U_FAILURE(err)) fail("Unicode normalisation unavailable (ICU: {})", u_errorName(err));
  // Plain ASCII is already in every normal form: the common case costs one scan.
  bool ascii = true;
  for (unsigned char c : s) ascii = ascii && c < 0x80;
  if (ascii) return s;
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(s);
  icu::UnicodeString out = n->normalize(in, err);
  if (U_FAILURE(err)) return s;
  std::string r;
  out.toUTF8String(r);
  return r;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t at = 0;
  for (size_t hit; (hit = s.find(from, at)) != std::string::npos; at = hit + from.size()) out.append(s, at, hit - at).append(to);
  out.append(s, at);
  s = std::move(out);
}

}  // namespace

void Normalizer::apply(std::string& s) const {
  switch (kind) {
    case Kind::Nfc:
    case Kind::Nfkc:
    case Kind::Nfd:
    case Kind::Nfkd:
      s = normal_form(s, kind);
      break;
    case Kind::Prepend:
      if (!s.empty()) s.insert(0, text);
      break;
    case Kind::Replace:
      if (pattern) {
        std::string out;
        size_t at = 0;
        for (const auto& [b, e] : pattern->matches(s)) {
          out.append(s, at, b - at).append(content);
          at = e;
        }
        out.append(s, at);
        s = std::move(out);
      } else {
        replace_all(s, text, content);
      }
      break;
    case Kind::Lowercase: {
      const icu::UnicodeString in = icu::UnicodeString::fromUTF8(s);
      std::string r;
      icu::UnicodeString(in).toLower().toUTF8String(r);
      s = std::move(r);
      break;
    }
  }
}

}  // namespace baq
