#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace baq::cli {

// A one-line progress bar with rate and ETA, drawn on stderr only when it is a terminal.
class ProgressBar {
 public:
  ProgressBar(std::string label, std::string unit);
  ~ProgressBar();
  void update(int64_t done, int64_t total);
  void finish();

 private:
  std::string label_, unit_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

// Peak resident memory of this process so far, in MiB.
double peak_rss_mib();

}  // namespace baq::cli
