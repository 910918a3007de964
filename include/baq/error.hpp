#pragma once
// One exception type for every user-facing failure: the message is a single line that names the
// file (or tensor) and the problem, so the CLI can print it as-is and exit non-zero.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace baq {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace baq
