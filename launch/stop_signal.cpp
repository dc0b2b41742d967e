#include "launch/stop_signal.h"

#include <csignal>

namespace nt {
namespace {
volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
  if (sig == SIGINT) std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process
}
}  // namespace

void install_stop_handlers() {
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) std::signal(sig, on_stop_signal);
}

int stop_requested() { return g_signal; }

}  // namespace nt
