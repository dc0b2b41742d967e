#include "core/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace nt {
namespace {
std::atomic<int> g_rank{0};

std::string timestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", std::localtime(&t));
  return buf;
}
}  // namespace

void set_log_rank(int rank) { g_rank = rank; }
int log_rank() { return g_rank; }

void log_error(const std::string& msg) {
  std::fprintf(stderr, "[rank %d] error: %s\n", g_rank.load(), msg.c_str());
  std::fflush(stderr);
}

void log_warn(const std::string& msg) {
  std::fprintf(stderr, "[rank %d] warning: %s\n", g_rank.load(), msg.c_str());
  std::fflush(stderr);
}

void log_info(const std::string& msg) {
  if (g_rank != 0) return;
  std::fprintf(stdout, "[%s] %s\n", timestamp().c_str(), msg.c_str());
  std::fflush(stdout);
}

void log_info_here(const std::string& msg) {
  std::fprintf(stdout, "[%s] [rank %d] %s\n", timestamp().c_str(), g_rank.load(), msg.c_str());
  std::fflush(stdout);
}

std::string where(const char* file, int line, const std::string& what) {
  return std::string(file) + ":" + std::to_string(line) + " (rank " + std::to_string(g_rank.load()) +
         "): " + what;
}

}  // namespace nt
