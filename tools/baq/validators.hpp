#pragma once
// Flag checks whose messages say the limits plainly (CLI11's own print the double range's ends as
// 300-digit numbers) and refuse NaN and infinities.
#include <CLI/CLI.hpp>

namespace baq::cli {

CLI::Validator IntRange(long long lo, long long hi);
CLI::Validator NumberRange(double lo, double hi);

}  // namespace baq::cli
