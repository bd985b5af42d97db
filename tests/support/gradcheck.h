// Test support for op tests: seeded random data, host <-> Tensor transfers, NaN poisoning,
// comparisons (nmse, all_close) and a finite-difference gradient checker in double.
//
// The usual gradient test of an op y = f(x):
//   1. fix a random projection R (same shape as y) and use L = sum(R * y), never sum(y): a sum
//      hides errors that cancel across outputs, a random projection does not;
//   2. run the op's backward with dy = R to get the analytic dL/dx;
//   3. expect_gradient_matches(loss, x, analytic, "what") perturbs x coordinate by coordinate
//      (central differences, a fixed sample of at most max_coords coordinates) and compares.
// Random numbers come from a small splitmix64 generator with Box-Muller normals, so the data is
// the same on every platform and standard library.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"

namespace moe::test {

// ---- seeded random data ---------------------------------------------------------------------
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
  uint64_t next_u64();
  double uniform();                       // in (0, 1), never 0 or 1
  double uniform(double lo, double hi);   // in (lo, hi)
  double normal();                        // standard normal
  int64_t below(int64_t n);               // in [0, n)

 private:
  uint64_t state_;
};

// Normal(mean, stddev) values; none is exactly zero (a zero hides sign and scale bugs).
std::vector<double> random_normal(size_t n, uint64_t seed, double stddev = 1.0,
                                  double mean = 0.0);
// Uniform values in (lo, hi), none exactly zero.
std::vector<double> random_uniform(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0);
// Integers in [0, hi).
std::vector<int32_t> random_ints(size_t n, int32_t hi, uint64_t seed);

// ---- host <-> Tensor ------------------------------------------------------------------------
// A new tensor of `dtype` (f32, f64 or bf16; values converted on the host) holding `values`.
Tensor to_tensor(Backend& be, const std::vector<double>& values, const Shape& shape, DType dtype);
Tensor to_tensor_i32(Backend& be, const std::vector<int32_t>& values, const Shape& shape);
// Writes host values into an existing tensor (converted to its dtype).
void upload_values(Backend& be, Tensor& t, const std::vector<double>& values);
// Any floating tensor (f32, f64, bf16) as doubles; i32 tensors with to_host_i32.
std::vector<double> to_host(Backend& be, const Tensor& t);
std::vector<int32_t> to_host_i32(Backend& be, const Tensor& t);
// Fills a floating tensor with NaN so an element the op forgets to write fails the comparison.
void poison(Backend& be, Tensor& t);
// A new tensor filled with NaN.
Tensor poisoned(Backend& be, const Shape& shape, DType dtype);

// ---- comparisons ----------------------------------------------------------------------------
// Normalised mean squared error sum((got - want)^2) / sum(want^2) (or the plain sum of squares
// when want is all zero). NaN anywhere gives NaN, which fails every `<` comparison.
double nmse(const std::vector<double>& got, const std::vector<double>& want);
// |got - want| <= atol + rtol * |want| everywhere (and both finite); the failure message names
// the worst index, its values and how many elements fail.
::testing::AssertionResult all_close(const std::vector<double>& got,
                                     const std::vector<double>& want, double atol, double rtol);
// Exact equality, bit for bit (NaN never equals); names the first mismatching index.
::testing::AssertionResult bitwise_equal(const std::vector<double>& got,
                                         const std::vector<double>& want);

// a - b elementwise (e.g. an accumulated gradient minus the value it was pre-filled with).
std::vector<double> difference(const std::vector<double>& a, const std::vector<double>& b);

// ---- random projection loss -----------------------------------------------------------------
// L(out) = sum_i r_i * out_i with fixed random weights r (Normal(0, 1), seeded). dL/dout = r.
struct RandomProjection {
  std::vector<double> r;
  RandomProjection(size_t n, uint64_t seed) : r(random_normal(n, seed)) {}
  double operator()(const std::vector<double>& out) const;
};

// ---- finite differences ---------------------------------------------------------------------
struct GradcheckOptions {
  double eps = 1e-6;        // central-difference step
  double atol = 1e-7;       // |g_fd - g| <= atol + rtol * |g_fd|
  double rtol = 1e-5;
  size_t max_coords = 2000; // coordinates checked; a fixed random sample when x is larger
  uint64_t seed = 7;        // seeds the coordinate sample
};

// Checks analytic[i] against (loss(x + eps e_i) - loss(x - eps e_i)) / (2 eps) on the sampled
// coordinates. `loss` must read `x` (captured by reference) each time it is called; x is
// restored afterwards. Adds a GoogleTest failure naming `what`, the worst coordinate and the
// number of failing coordinates.
void expect_gradient_matches(const std::function<double()>& loss, std::vector<double>& x,
                             const std::vector<double>& analytic, const std::string& what,
                             GradcheckOptions opts = {});

}  // namespace moe::test
