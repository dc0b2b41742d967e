// Progress (progress.h): "<what>: 42.0% (420000 of 1000000 samples), 12 s elapsed, about 17 s
// left" on stderr. The estimate assumes the rate so far holds for the rest.
#include "data/progress.h"

#include <cstdio>

namespace nt {

namespace {

std::string seconds_text(double s) {
  char buf[64];
  if (s < 90) std::snprintf(buf, sizeof(buf), "%.0f s", s);
  else if (s < 5400) std::snprintf(buf, sizeof(buf), "%.1f min", s / 60);
  else std::snprintf(buf, sizeof(buf), "%.1f h", s / 3600);
  return buf;
}

}  // namespace

Progress::Progress(std::string what, int64_t total, std::string unit)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), start_(Clock::now()),
      last_(start_) {}

void Progress::update(int64_t done) {
  const Clock::time_point now = Clock::now();
  if (now - last_ < std::chrono::seconds(1)) return;
  last_ = now;
  printed_ = true;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double share = total_ > 0 ? double(done) / double(total_) : 1.0;
  std::string left = done > 0 ? "about " + seconds_text(elapsed * (1 - share) / share) + " left"
                              : "time left unknown";
  std::fprintf(stderr, "%s: %.1f%% (%lld of %lld %s), %s elapsed, %s\n", what_.c_str(),
               100 * share, static_cast<long long>(done), static_cast<long long>(total_),
               unit_.c_str(), seconds_text(elapsed).c_str(), left.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (!printed_) return;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  std::fprintf(stderr, "%s: done, %lld %s in %s\n", what_.c_str(),
               static_cast<long long>(total_), unit_.c_str(), seconds_text(elapsed).c_str());
  std::fflush(stderr);
}

}  // namespace nt
