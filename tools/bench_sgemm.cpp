// bench_sgemm: the single-precision GEMM rate of the OpenBLAS that moe-spec links, the peak
// against which docs/benchmarks.md reports CPU model FLOP utilisation (MFU), and a comparison of
// OpenBLAS with oneDNN (the CPU backend's f32 GEMM) on the products of the d=128 benchmark model.
//
//   bench_sgemm [--threads 2] [--size 2048] [--reps 5]
//   bench_sgemm --shapes 1 [--reps 5]     (single-threaded, both libraries, the model's shapes)
//
// Times C = A B (row-major, M = N = K = size, beta = 0) with OpenBLAS at the given thread count
// (openblas_set_num_threads; the library's own pthread pool, no OpenMP) and prints the best and
// the median rate in GFLOP/s over `reps` timed calls after one untimed warm-up call. The best is
// the figure to quote as the peak: on a shared machine the others are slowed by the neighbours.
// One line of JSON goes to stdout last: {"threads":..,"size":..,"gflops_best":..,"gflops_median":..}.
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>

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
  bool shapes = false;
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
    else if (flag == "--shapes") o.shapes = true;
    else usage(("unknown option " + flag).c_str());
  }
  return o;
}

// Uniform(-1, 1) values for both operands, the same ones every run.
void fill_operands(std::vector<float>& a, std::vector<float>& b) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = dist(rng);
    b[i] = dist(rng);
  }
}

// One product of the benchmark model, row-major C[m,n] = op(A) op(B) as the backend calls it
// (256-row blocks; see lib/backend/cpu/matmul.cpp).
struct Shape {
  const char* what;
  bool trans_a, trans_b;
  int m, n, k;
};

// Best rate in GFLOP/s over `reps` rounds of enough calls for ~0.2 s each, single-threaded.
double shape_rate(const Shape& s, bool dnnl, int reps, const float* a, const float* b, float* c) {
  const int lda = s.trans_a ? s.m : s.k, ldb = s.trans_b ? s.k : s.n;
  const double flop = 2.0 * s.m * s.n * static_cast<double>(s.k);
  const int calls = std::max(10, static_cast<int>(2e10 / 100.0 / flop));
  double best = 0;
  for (int r = 0; r <= reps; ++r) {  // round 0 warms up
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) {
      if (dnnl) {
        dnnl_sgemm(s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', s.m, s.n, s.k, 1.0f, a, lda, b,
                   ldb, 0.0f, c, s.n);
      } else {
        cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
                    s.trans_b ? CblasTrans : CblasNoTrans, s.m, s.n, s.k, 1.0f, a, lda, b, ldb,
                    0.0f, c, s.n);
      }
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, flop * calls / sec / 1e9);
  }
  return best;
}

int run_shapes(const Options& o) {
  openblas_set_num_threads(1);
  omp_set_num_threads(1);
  const Shape shapes[] = {
      {"expert gate/up forward  256x256x128 NT", false, true, 256, 256, 128},
      {"expert down forward     256x128x256 NT", false, true, 256, 128, 256},
      {"expert down dx          256x256x128 NN", false, false, 256, 256, 128},
      {"expert gate dw          256x128x256 TN", true, false, 256, 128, 256},
      {"attention q/o forward   256x128x128 NT", false, true, 256, 128, 128},
      {"attention q dw          128x128x1024 TN", true, false, 128, 128, 1024},
      {"LM head forward         256x4096x128 NT", false, true, 256, 4096, 128},
      {"LM head dx              256x128x4096 NN", false, false, 256, 128, 4096},
      {"LM head dw              256x128x1024 TN", true, false, 256, 128, 1024},
  };
  const size_t n = 4096 * 4096;
  std::vector<float> a(n), b(n), c(n);
  fill_operands(a, b);
  std::printf("%-42s %10s %10s %7s\n", "product (m x n x k, row-major ops)", "OpenBLAS", "oneDNN",
              "ratio");
  for (const Shape& s : shapes) {
    const double blas = shape_rate(s, false, o.reps, a.data(), b.data(), c.data());
    const double dnnl = shape_rate(s, true, o.reps, a.data(), b.data(), c.data());
    std::printf("%-42s %10.1f %10.1f %7.2f\n", s.what, blas, dnnl, dnnl / blas);
  }
  std::printf("(GFLOP/s, single-threaded, best of %d rounds)\n", o.reps);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (o.shapes) return run_shapes(o);
  openblas_set_num_threads(o.threads);
  const size_t n = static_cast<size_t>(o.size) * static_cast<size_t>(o.size);
  std::vector<float> a(n), b(n), c(n);
  fill_operands(a, b);
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
