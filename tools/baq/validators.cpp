#include "validators.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace baq::cli {

CLI::Validator IntRange(long long lo, long long hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE)
          return fmt::format("'{}' is not an integer", s);
        if (v < lo || v > hi) return fmt::format("{} is outside {}..{}", v, lo, hi);
        return {};
      },
      fmt::format("INT in {}..{}", lo, hi));
}

CLI::Validator NumberRange(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE) return fmt::format("'{}' is not a number", s);
        if (!std::isfinite(v)) return fmt::format("{} is not a finite number", s);
        if (v < lo || v > hi) return fmt::format("{} is outside {:g}..{:g}", s, lo, hi);
        return {};
      },
      fmt::format("NUMBER in {:g}..{:g}", lo, hi));
}

}  // namespace baq::cli
