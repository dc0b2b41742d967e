// Progress: a line on stderr with the share done, the elapsed time and an estimate of the time
// left, for long imports and scans; at most one line a second, and none for a job that ends
// within its first second.
//   Progress p("validate 'a.h5'", n, "samples");  ... p.update(done); ...  p.finish();
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace nt {

class Progress {
 public:
  Progress(std::string what, int64_t total, std::string unit = "samples");
  // Reports `done` of `total` if a second has passed since the start or the last line.
  void update(int64_t done);
  // Prints a closing line if any progress line was printed.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  std::string what_, unit_;
  int64_t total_;
  Clock::time_point start_, last_;
  bool printed_ = false;
};

}  // namespace nt
