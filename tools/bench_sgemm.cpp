// bench_sgemm: the single-precision GEMM rate of the OpenBLAS that moe-spec links, the peak
// against which docs/benchmarks.md reports CPU model FLOP utilisation (MFU).
//
//   bench_sgemm [--threads 2] [--size 2048] [--reps 5]
//
// Times C = A B (row-major, M = N = K = size, beta = 0) with OpenBLAS at the given thread count
// (openblas_set_num_threads; the library's own pthread pool, no OpenMP) and prints the best and
// the median rate in GFLOP/s over `reps` timed calls after one untimed warm-up call. The best is
// the figure to quote as the peak: on a shared machine the others are slowed by the neighbours.
// One line of JSON goes to stdout last: {"threads":..,"size":..,"gflops_best":..,"gflops_median":..}.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" void openblas_set_num_threads(int num_threads);

namespace {

struct Options {
  int threads = 2;
  int size = 2048;
  int reps = 5;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "bench_sgemm: %s\nusage: bench_sgemm [--threads N] [--size N] [--reps N]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + flag).c_str());
    char* end = nullptr;
    const long value = std::strtol(argv[++i], &end, 10);
    if (*end != '\0' || value <= 0 || value > 1 << 16) {
      usage(("expected a positive integer after " + flag + ", found '" + argv[i] + "'").c_str());
    }
    if (flag == "--threads") o.threads = static_cast<int>(value);
    else if (flag == "--size") o.size = static_cast<int>(value);
    else if (flag == "--reps") o.reps = static_cast<int>(value);
    else usage(("unknown option " + flag).c_str());
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  openblas_set_num_threads(o.threads);
  const size_t n = static_cast<size_t>(o.size) * static_cast<size_t>(o.size);
  std::vector<float> a(n), b(n), c(n);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (size_t i = 0; i < n; ++i) {
    a[i] = dist(rng);
    b[i] = dist(rng);
  }
  auto run_once = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, o.size, o.size, o.size, 1.0f, a.data(),
                o.size, b.data(), o.size, 0.0f, c.data(), o.size);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  run_once();  // warm-up: thread pool start, page faults
  const double flop = 2.0 * o.size * static_cast<double>(o.size) * o.size;
  std::vector<double> rates;
  for (int r = 0; r < o.reps; ++r) rates.push_back(flop / run_once() / 1e9);
  std::sort(rates.begin(), rates.end());
  const double best = rates.back(), median = rates[rates.size() / 2];
  std::printf("sgemm %d^3, %d threads: best %.1f GFLOP/s, median %.1f GFLOP/s (%d reps)\n", o.size,
              o.threads, best, median, o.reps);
  std::printf("{\"threads\": %d, \"size\": %d, \"gflops_best\": %.2f, \"gflops_median\": %.2f}\n",
              o.threads, o.size, best, median);
  return 0;
}
