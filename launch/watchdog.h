// Watchdog: ends a training job that makes no progress. A rank whose collective never completes
// (another rank stuck in a file system call, a dead node, a GPU that hung) waits forever, and so
// does the job until its time limit, holding every node. The trainer marks progress after every
// step and around checkpoints; a background thread that sees no mark for `timeout_s` seconds
// calls `on_hang` with a message that names what the rank was doing (tread_run: abort_job, which
// prints it and ends every rank, so that the job can be started again and resume from its last
// checkpoint).
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace nt {

class Watchdog {
 public:
  // timeout_s <= 0: no thread, progress() does nothing.
  Watchdog(double timeout_s, std::function<void(const std::string& message)> on_hang);
  ~Watchdog();  // stops the thread
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Progress was made; `doing` is what comes next ("step 12", "writing checkpoint 5000").
  void progress(const std::string& doing);

 private:
  void watch();
  using Clock = std::chrono::steady_clock;
  double timeout_s_;
  std::function<void(const std::string&)> on_hang_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  Clock::time_point last_;
  std::string doing_ = "starting";
  std::thread thread_;
};

}  // namespace nt
