// Watchdog (watchdog.h).
#include "train/watchdog.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <spdlog/spdlog.h>

namespace moe {
namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Watchdog::Watchdog(double timeout_s, int rank) : timeout_s_(timeout_s), rank_(rank) {
  last_beat_ns_ = now_ns();
  if (timeout_s_ > 0) thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

void Watchdog::beat(const char* where) {
  last_beat_ns_ = now_ns();
  where_ = where;
}

void Watchdog::watch() {
  const auto period = std::chrono::milliseconds(
      static_cast<int64_t>(std::min(1000.0, timeout_s_ * 100.0)));
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_cv_.wait_for(lock, period, [this] { return stop_; })) {
    const double idle = static_cast<double>(now_ns() - last_beat_ns_) * 1e-9;
    if (idle > timeout_s_) {
      spdlog::error("rank {}: no progress for {:.0f} s (run.step_timeout_s = {:g}) after {}: a "
                    "peer rank is hung or gone; ending this rank so that the launcher ends the "
                    "job", rank_, idle, timeout_s_, where_.load());
      spdlog::default_logger()->flush();
      std::fflush(stderr);
      std::_Exit(1);
    }
  }
}

}  // namespace moe
