#include "core/cpu_peak.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>

#include <spdlog/fmt/fmt.h>

namespace moe {
namespace {

// The clock assumed when it can be neither read nor measured.
constexpr double kAssumedClockGhz = 3.0;

struct VectorUnit {
  int flops_per_cycle_per_pipe;
  const char* name;
};

VectorUnit widest_vector_unit() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {16 * 2, "AVX-512 FMA"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {8 * 2, "AVX2 FMA"};
  if (__builtin_cpu_supports("avx")) return {8, "AVX"};  // add and multiply on separate pipes
  return {4, "SSE"};
}

}  // namespace

double cpu_reported_clock_ghz() {
  {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
    double khz = 0;
    if (f >> khz && khz > 0) return khz / 1e6;
  }
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  double best_mhz = 0;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    try {
      best_mhz = std::max(best_mhz, std::stod(line.substr(colon + 1)));
    } catch (const std::exception&) {
      // A malformed line is skipped; the other cores' lines still count.
    }
  }
  return best_mhz / 1e3;
}

double cpu_measured_clock_ghz() {
#if defined(__x86_64__)
  // Each `add` reads the previous one's result, so the chain runs at one add per cycle on every
  // x86-64 core (add latency is 1; register-register adds are not eliminated at rename). The loop
  // counter runs beside it on other ports. A core that ran the chain faster would only make the
  // clock, and so the peak, larger: MFU understated, never overstated.
  constexpr int64_t kRounds = 12;
  constexpr int64_t kIterations = 500000;  // x 16 adds: 8M cycles, 2-4 ms at 2-4 GHz
  const uint64_t one = 1;
  double best = 0;
  for (int64_t round = 0; round < kRounds; ++round) {  // the first rounds raise the clock
    uint64_t x = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < kIterations; ++i) {
      asm volatile(
          "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
          "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
          "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
          "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0"
          : "+r"(x)
          : "r"(one));
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best = std::max(best, 16.0 * static_cast<double>(kIterations) / s / 1e9);
  }
  return best;
#else
  return 0;
#endif
}

CpuPeak estimate_cpu_peak(int threads) {
  constexpr int kPipesPerCore = 2;
  const VectorUnit unit = widest_vector_unit();
  const double reported = cpu_reported_clock_ghz(), measured = cpu_measured_clock_ghz();
  double ghz = std::max(reported, measured);
  std::string clock_source = measured >= reported
                                 ? fmt::format("measured; the kernel reports {:.2f}", reported)
                                 : fmt::format("reported; measured {:.2f}", measured);
  if (ghz <= 0) {
    ghz = kAssumedClockGhz;
    clock_source = "neither reported nor measurable; assumed";
  }
  const int per_core = unit.flops_per_cycle_per_pipe * kPipesPerCore;
  CpuPeak peak;
  peak.flops_per_second = static_cast<double>(threads) * per_core * ghz * 1e9;
  peak.basis = fmt::format("{} thread{} x {} f32 FLOP/cycle ({}, {} pipes) x {:.2f} GHz ({})",
                           threads, threads == 1 ? "" : "s", per_core, unit.name, kPipesPerCore,
                           ghz, clock_source);
  return peak;
}

}  // namespace moe
