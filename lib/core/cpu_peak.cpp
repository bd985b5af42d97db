#include "core/cpu_peak.h"

#include <algorithm>
#include <fstream>
#include <string>

#include <spdlog/fmt/fmt.h>

namespace moe {
namespace {

// The clock assumed when the kernel reports none (a container without /proc/cpuinfo's MHz line).
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

double cpu_max_clock_ghz() {
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

CpuPeak estimate_cpu_peak(int threads) {
  constexpr int kPipesPerCore = 2;
  const VectorUnit unit = widest_vector_unit();
  double ghz = cpu_max_clock_ghz();
  const bool assumed = ghz <= 0;
  if (assumed) ghz = kAssumedClockGhz;
  const int per_core = unit.flops_per_cycle_per_pipe * kPipesPerCore;
  CpuPeak peak;
  peak.flops_per_second = static_cast<double>(threads) * per_core * ghz * 1e9;
  peak.basis = fmt::format("{} thread{} x {} f32 FLOP/cycle ({}, {} pipes) x {:.2f} GHz{}", threads,
                           threads == 1 ? "" : "s", per_core, unit.name, kPipesPerCore, ghz,
                           assumed ? " (clock not reported; assumed)" : "");
  return peak;
}

}  // namespace moe
