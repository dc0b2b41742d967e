// The training watchdog (see launch/watchdog.h).
#include "launch/watchdog.h"

#include <cstdio>

namespace nt {

Watchdog::Watchdog(double timeout_s, std::function<void(const std::string&)> on_hang)
    : timeout_s_(timeout_s), on_hang_(std::move(on_hang)), last_(Clock::now()) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::progress(const std::string& doing) {
  if (timeout_s_ <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  last_ = Clock::now();
  doing_ = doing;
}

void Watchdog::watch() {
  const auto timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    const auto deadline = last_ + timeout;
    if (Clock::now() >= deadline) {
      char secs[32];
      std::snprintf(secs, sizeof(secs), "%g", timeout_s_);
      const std::string message = std::string("no training progress for ") + secs + " s (train.watchdog_s) while " +
                                  doing_ +
                                  ": a rank or a collective is stuck (if a step or a checkpoint really takes that "
                                  "long, raise train.watchdog_s); run the same command again to resume from the "
                                  "last checkpoint";
      lock.unlock();
      on_hang_(message);  // tread_run: ends the job; a test's callback may return
      return;
    }
    cv_.wait_until(lock, deadline);
  }
}

}  // namespace nt
