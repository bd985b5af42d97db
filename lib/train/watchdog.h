// A watchdog for multi-process runs: a rank blocked in a collective whose peer hangs (alive but
// stuck: SIGSTOP, a deadlocked driver, a lost node that the launcher does not notice) would wait
// forever. The trainer calls beat() as it makes progress; when no beat comes for `timeout_s`
// seconds the watchdog logs an error naming the rank and the time, and ends this process with
// exit code 1 (without MPI's finalisation, which would wait for the peer): the launcher then ends
// the whole job. A rank that dies outright is handled by the launcher alone (docs/distributed.md).
#pragma once
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace moe {

class Watchdog {
 public:
  // timeout_s <= 0: no watchdog (no thread).
  Watchdog(double timeout_s, int rank);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  void beat(const char* where);

 private:
  void watch();
  double timeout_s_;
  int rank_;
  std::atomic<int64_t> last_beat_ns_{0};
  std::atomic<const char*> where_{"start"};
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace moe
