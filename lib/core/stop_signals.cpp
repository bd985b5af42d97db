// The stop-signal thread (see stop_signals.h).
#include "core/stop_signals.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/omp_wait_policy.h"

namespace moe {
namespace {

std::atomic<int> g_stop_signal{0};

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

// The watcher is an ordinary thread, so it may use stdio; it avoids spdlog because the main
// thread may be changing the logger's sinks (attach_run_log) at the same moment.
void* wait_for_stop_signals(void*) {
  // Named, so that a look at /proc/PID/task/*/comm tells it from the others: while it waits in
  // sigwait, the kernel reports the waited signals as unblocked for it (SigBlk).
  pthread_setname_np(pthread_self(), "moe-signals");
  const sigset_t set = stop_set();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    int expected = 0;
    if (g_stop_signal.compare_exchange_strong(expected, sig)) {
      std::fprintf(stderr, "received %s: stopping after the current step, which is saved as a "
                   "checkpoint (exit code 130); send it again to stop at once without saving\n",
                   strsignal(sig));
      std::fflush(stderr);
    } else {
      std::fprintf(stderr, "received %s again: stopping now without saving (the newest "
                   "complete checkpoint stays valid)\n", strsignal(sig));
      std::fflush(stderr);
      std::_Exit(130);
    }
  }
  return nullptr;
}

}  // namespace

void take_stop_signals_in_a_thread(char** argv) {
  // Set by the image that blocked the signals before re-executing: this image was started with
  // them blocked, so every thread created before main() has them blocked as well.
  constexpr const char* kMarker = "MOE_STOP_SIGNALS_BLOCKED";
  const bool started_blocked = std::getenv(kMarker) != nullptr;
  const sigset_t set = stop_set();
  int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr);
  MOE_CHECK(rc == 0, "cannot block the stop signals: {}", std::strerror(rc));
  if (!started_blocked) {
    setenv(kMarker, "1", 1);
    prefer_passive_omp_wait(argv);  // re-executes when it changes the policy: mask carries over
    reexec_self(argv);
    std::fprintf(stderr, "warning: cannot re-execute the program (%s): threads started "
                 "before main may take SIGINT/SIGTERM with their default action\n",
                 std::strerror(errno));
  }
  unsetenv(kMarker);  // not for child processes
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  rc = pthread_create(&thread, &attr, wait_for_stop_signals, nullptr);
  pthread_attr_destroy(&attr);
  MOE_CHECK(rc == 0, "cannot start the stop-signal thread: {}", std::strerror(rc));
}

int stop_signal_received() { return g_stop_signal.load(); }

void clear_stop_signal() { g_stop_signal.store(0); }

}  // namespace moe
