// The CPU peak behind a CPU run's MFU (core/cpu_peak.h): linear in threads, described, and an
// upper bound on what the machine's sgemm achieves (a peak below a measured throughput is what
// made CPU runs print MFU above 100%).
#include <gtest/gtest.h>

#include <cblas.h>
#include <chrono>
#include <cstdint>
#include <vector>

#include "core/cpu_peak.h"

namespace moe {
namespace {

TEST(CpuPeak, ScalesWithThreadsAndSaysHow) {
  const CpuPeak one = estimate_cpu_peak(1);
  const CpuPeak four = estimate_cpu_peak(4);
  EXPECT_GT(one.flops_per_second, 1e9);  // any x86-64 core with SSE at >= 0.25 GHz
  EXPECT_DOUBLE_EQ(four.flops_per_second, 4 * one.flops_per_second);
  EXPECT_NE(one.basis.find("1 thread x"), std::string::npos) << one.basis;
  EXPECT_NE(four.basis.find("4 threads x"), std::string::npos) << four.basis;
  EXPECT_NE(one.basis.find("GHz"), std::string::npos) << one.basis;
}

TEST(CpuPeak, ReadsTheClockOnLinux) {
  const double ghz = cpu_max_clock_ghz();
  EXPECT_GT(ghz, 0.2);
  EXPECT_LT(ghz, 10.0);
}

TEST(CpuPeak, IsAnUpperBoundOnOneThreadsSgemm) {
  // One thread of OpenBLAS on a 512^3 product, best of 5: load on the machine only lowers it.
  openblas_set_num_threads(1);
  const int n = 512;
  std::vector<float> a(n * n), b(n * n), c(n * n);
  for (int64_t i = 0; i < int64_t{n} * n; ++i) {
    a[i] = static_cast<float>((i * 7919) % 1000) / 1000.0f - 0.5f;
    b[i] = static_cast<float>((i * 104729) % 1000) / 1000.0f - 0.5f;
  }
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  const CpuPeak peak = estimate_cpu_peak(1);
  RecordProperty("sgemm_gflops", static_cast<int>(best / 1e9));
  EXPECT_LT(best, peak.flops_per_second)
      << "measured sgemm " << best / 1e9 << " GFLOP/s above the estimated peak " << peak.basis;
}

}  // namespace
}  // namespace moe
