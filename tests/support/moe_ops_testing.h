// Thin adapters over gradcheck.h for the routing / dispatch / loss op tests
// (test_ops_router.cpp, test_ops_dispatch.cpp, test_ops_losses.cpp): shape-first tensor
// construction, index tensors, seeded uniform vectors, a shuffle on the portable Rng, and
// finite-difference / closeness checks that take a loss of x by value.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "support/gradcheck.h"

namespace moe::test {

using Vec = std::vector<double>;

inline Tensor make_tensor(Backend& be, const Shape& shape, DType dtype, const Vec& values) {
  return to_tensor(be, values, shape, dtype);
}

inline Tensor make_index(Backend& be, const Shape& shape, const std::vector<int32_t>& values) {
  return to_tensor_i32(be, values, shape);
}

inline Vec read(Backend& be, const Tensor& t) { return to_host(be, t); }
inline std::vector<int32_t> read_index(Backend& be, const Tensor& t) { return to_host_i32(be, t); }

inline Vec random_vec(size_t n, Rng& rng, double lo = -1.0, double hi = 1.0) {
  Vec v(n);
  for (double& x : v) x = rng.uniform(lo, hi);
  return v;
}

inline Vec nan_vec(size_t n) { return Vec(n, std::numeric_limits<double>::quiet_NaN()); }

// Fisher-Yates on the portable generator (std::shuffle's output differs between libraries).
template <typename T> void shuffle(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(static_cast<int64_t>(i))]);
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline Vec add_vec(const Vec& a, const Vec& b) {
  Vec c(a.size());
  for (size_t i = 0; i < a.size(); ++i) c[i] = a[i] + b[i];
  return c;
}

inline Vec sub_vec(const Vec& a, const Vec& b) {
  Vec c(a.size());
  for (size_t i = 0; i < a.size(); ++i) c[i] = a[i] - b[i];
  return c;
}

// Every |actual - expected| <= atol + rtol * |expected|, both finite (a NaN left from the
// pre-filled output fails).
inline void expect_close(const Vec& actual, const Vec& expected, double atol, double rtol,
                         const std::string& what) {
  EXPECT_TRUE(all_close(actual, expected, atol, rtol)) << what;
}

// Central finite differences of loss(x) on every coordinate against `analytic`.
inline void expect_grad(const std::function<double(const Vec&)>& loss, Vec x, const Vec& analytic,
                        const std::string& what, double atol, double rtol) {
  GradcheckOptions opts;
  opts.atol = atol;
  opts.rtol = rtol;
  expect_gradient_matches([&] { return loss(x); }, x, analytic, what, opts);
}

}  // namespace moe::test
