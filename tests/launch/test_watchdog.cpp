// The training watchdog (launch/watchdog.h): quiet while progress is marked, and once it stops,
// one call naming what the rank was doing; off with a timeout of 0. Through tread_run: a rank
// that stops (SIGSTOP) leaves the other waiting in a collective, whose watchdog ends the job with
// a message instead of letting it hang; the run then resumes from its last checkpoint.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

#include "core/checkpoint.h"
#include "launch/run_fixture.h"
#include "launch/watchdog.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using namespace nt::test;

TEST(Watchdog, QuietWhileProgressIsMarkedThenOneCall) {
  std::atomic<int> calls{0};
  std::mutex mu;
  std::string message;
  {
    nt::Watchdog w(0.3, [&](const std::string& m) {
      std::lock_guard<std::mutex> lock(mu);
      message = m;
      ++calls;
    });
    for (int i = 0; i < 12; ++i) {  // 0.6 s of progress every 0.05 s
      w.progress("in step " + std::to_string(i));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(calls.load(), 0);
    w.progress("writing checkpoint 7");
    std::this_thread::sleep_for(std::chrono::milliseconds(900));
    EXPECT_EQ(calls.load(), 1);
  }
  EXPECT_EQ(calls.load(), 1);
  EXPECT_CONTAINS(message, "no training progress for 0.3 s (train.watchdog_s) while writing checkpoint 7");
  // Off: no call however long nothing happens.
  nt::Watchdog off(0, [&](const std::string&) { ++calls; });
  off.progress("in step 1");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(calls.load(), 1);
}

TEST(Watchdog, AStoppedRankEndsTheJobInsteadOfHangingIt) {
  RunSetup s = make_setup();
  const std::string log = s.dir + "/wd.log";
  const std::string job = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpiexec --oversubscribe -n 2 " +
                          exe("launch/tread_run") + " --config " + s.config +
                          " --set run.name=wd --set train.steps=1000000 --set train.watchdog_s=4";
  // Start the job, wait for its first checkpoint (step 5), stop rank 1's process, and wait: the
  // job must end by itself (the test gives it 60 s).
  const std::string script =
      "(" + job + ") > " + log + " 2>&1 & pid=$!; "
      "for i in $(seq 600); do [ -e " + s.dir + "/runs/wd/ckpt/latest ] && break; sleep 0.1; done; "
      "victim=$(for p in $(pgrep -x tread_run); do tr \"\\0\" \" \" < /proc/$p/cmdline | grep -q \"" + s.dir +
      ".*run.name=wd \" && echo $p; done | sort -n | tail -1); kill -STOP $victim; "
      "t0=$(date +%s); for i in $(seq 600); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done; "
      "echo ended after $(( $(date +%s) - t0 )) s; kill -KILL $victim 2>/dev/null; wait $pid";
  std::string out;
  const int rc = run_command("bash -c '" + script + "'", &out);
  const std::string text = read_text(log);
  EXPECT_NE(rc, 0) << out << text;
  EXPECT_CONTAINS(out, "ended after");
  EXPECT_CONTAINS(text, "fatal: no training progress for 4 s (train.watchdog_s) while ");
  // In a step, or writing a checkpoint (every 5 steps) where the stop came as one began: on a busy
  // machine the job may be at step 10 by the time the victim stops.
  EXPECT_TRUE(text.find("(train.watchdog_s) while in step") != std::string::npos ||
              text.find("(train.watchdog_s) while writing checkpoint") != std::string::npos)
      << text;
  EXPECT_CONTAINS(text, "-- ending the whole job");
  // The run resumes from its last checkpoint.
  std::string again;
  ASSERT_EQ(run(s, 2, "--set run.name=wd --set train.steps=12", &again), 0) << again;
  EXPECT_CONTAINS(again, "resumed from");
  EXPECT_EQ(nt::read_verified_manifest(ckpt(s, "wd", 12)).at("step").get<int64_t>(), 12);
}

}  // namespace
