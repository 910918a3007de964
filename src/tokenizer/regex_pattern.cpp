#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "baq/error.hpp"
#include "tokenizer/tokenizer_pipeline.hpp"

namespace baq {

Pattern::Pattern(const std::string& regex, const std::string& source) : regex_(regex) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.data()), regex.size(), PCRE2_UTF | PCRE2_UCP,
                                   &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(error, msg, sizeof msg);
    fail("{}: pre-tokenizer regex does not compile at {}: {}", source, offset, reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is the fallback
  code_ = code;
}

Pattern::~Pattern() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Pattern::matches(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE start = 0;
  while (start <= text.size()) {
    // Invalid UTF-8 (a byte-level piece, arbitrary input) is matched as it is rather than refused.
    const int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] > ov[0]) {
      out.emplace_back(ov[0], ov[1]);
      start = ov[1];
    } else {  // an empty match: step one character on
      if (ov[0] >= text.size()) break;
      size_t n = 1;
      while (ov[0] + n < text.size() && (static_cast<unsigned char>(text[ov[0] + n]) & 0xC0) == 0x80) ++n;
      start = ov[0] + n;
    }
  }
  pcre2_match_data_free(md);
  return out;
}

}  // namespace baq
