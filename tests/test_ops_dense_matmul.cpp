// CpuBackend matrix products: matmul (y = x w^T) and the grouped expert GEMM. Checked against
// naive loops, finite differences in double, the accumulate/overwrite conventions, a loop of
// dense matmuls (with an expert that gets no rows and one that gets all rows) and thread-count
// independence.
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "support/gradcheck.h"

namespace moe {
namespace {

using test::all_close;
using test::difference;
using test::expect_gradient_matches;
using test::poisoned;
using test::RandomProjection;
using test::random_normal;
using test::to_host;
using test::to_tensor;
using test::to_tensor_i32;

constexpr DType kF64 = DType::kF64;
constexpr DType kF32 = DType::kF32;

std::vector<double> naive_xwt(const std::vector<double>& x, const std::vector<double>& w,
                              int64_t M, int64_t N, int64_t K) {
  std::vector<double> y(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) y[m * N + n] += x[m * K + k] * w[n * K + k];
  return y;
}

TEST(Matmul, ForwardMatchesNaiveAndAccumulates) {
  CpuBackend be(2);
  const int64_t M = 13, N = 67, K = 10;
  std::vector<double> x = random_normal(M * K, 1), w = random_normal(N * K, 2);
  std::vector<double> want = naive_xwt(x, w, M, N, K);
  for (DType dt : {kF64, kF32}) {
    Tensor y = poisoned(be, {M, N}, dt);
    Tensor tx = to_tensor(be, x, {M, K}, dt), tw = to_tensor(be, w, {N, K}, dt);
    be.matmul_forward(y, tx, tw, false);
    double tol = dt == kF64 ? 1e-13 : 1e-5;
    EXPECT_TRUE(all_close(to_host(be, y), want, tol, tol)) << dtype_name(dt);
    std::vector<double> y0 = random_normal(M * N, 3);
    Tensor acc = to_tensor(be, y0, {M, N}, dt);
    be.matmul_forward(acc, tx, tw, true);
    std::vector<double> want_acc(M * N);
    for (int64_t i = 0; i < M * N; ++i) want_acc[i] = y0[i] + want[i];
    EXPECT_TRUE(all_close(to_host(be, acc), want_acc, tol, tol)) << dtype_name(dt);
  }
}

TEST(Matmul, BackwardMatchesFiniteDifferencesWithConventions) {
  CpuBackend be(2);
  const int64_t M = 7, N = 5, K = 11;
  std::vector<double> x = random_normal(M * K, 4), w = random_normal(N * K, 5);
  RandomProjection proj(M * N, 6);
  auto loss = [&] {
    Tensor y = be.empty({M, N}, kF64);
    be.matmul_forward(y, to_tensor(be, x, {M, K}, kF64), to_tensor(be, w, {N, K}, kF64), false);
    return proj(to_host(be, y));
  };
  Tensor tx = to_tensor(be, x, {M, K}, kF64), tw = to_tensor(be, w, {N, K}, kF64);
  Tensor dy = to_tensor(be, proj.r, {M, N}, kF64);
  std::vector<double> dw0 = random_normal(N * K, 7), dx0 = random_normal(M * K, 8);
  Tensor dx = poisoned(be, {M, K}, kF64), dw = to_tensor(be, dw0, {N, K}, kF64);
  be.matmul_backward(dx, dw, dy, tx, tw, false);
  std::vector<double> gx = to_host(be, dx), gw = difference(to_host(be, dw), dw0);
  expect_gradient_matches(loss, x, gx, "matmul dx");
  expect_gradient_matches(loss, w, gw, "matmul dw");

  // accumulate_dx adds; an undefined dw is skipped; an undefined dx is skipped.
  Tensor dx_acc = to_tensor(be, dx0, {M, K}, kF64), no_dw;
  be.matmul_backward(dx_acc, no_dw, dy, tx, tw, true);
  std::vector<double> want(M * K);
  for (int64_t i = 0; i < M * K; ++i) want[i] = dx0[i] + gx[i];
  EXPECT_TRUE(all_close(to_host(be, dx_acc), want, 1e-13, 1e-13));
  Tensor no_dx;
  be.matmul_backward(no_dx, dw, dy, tx, tw, false);
  std::vector<double> want_dw(N * K);
  for (int64_t i = 0; i < N * K; ++i) want_dw[i] = dw0[i] + 2 * gw[i];
  EXPECT_TRUE(all_close(to_host(be, dw), want_dw, 1e-13, 1e-13));
}

TEST(Matmul, RejectsMismatchedShapes) {
  CpuBackend be(1);
  Tensor x = be.zeros({4, 8}, kF32), w = be.zeros({3, 7}, kF32), y = be.empty({4, 3}, kF32);
  EXPECT_THROW(be.matmul_forward(y, x, w, false), Error);
  Tensor w_ok = be.zeros({3, 8}, kF32), y_bad = be.empty({3, 4}, kF32);
  EXPECT_THROW(be.matmul_forward(y_bad, x, w_ok, false), Error);
  Tensor y_f64 = be.empty({4, 3}, kF64);
  EXPECT_THROW(be.matmul_forward(y_f64, x, w_ok, false), Error);
}

TEST(Matmul, ForwardAndBackwardAreIndependentOfThreadCount) {
  const int64_t M = 257, N = 191, K = 300;
  std::vector<double> x = random_normal(M * K, 9), w = random_normal(N * K, 10);
  std::vector<double> dy = random_normal(M * N, 11);
  std::vector<std::vector<double>> ys, dxs, dws;
  for (int threads : {1, 2}) {
    CpuBackend be(threads);
    Tensor tx = to_tensor(be, x, {M, K}, kF32), tw = to_tensor(be, w, {N, K}, kF32);
    Tensor y = be.empty({M, N}, kF32), dx = be.empty({M, K}, kF32), dw = be.zeros({N, K}, kF32);
    be.matmul_forward(y, tx, tw, false);
    be.matmul_backward(dx, dw, to_tensor(be, dy, {M, N}, kF32), tx, tw, false);
    ys.push_back(to_host(be, y));
    dxs.push_back(to_host(be, dx));
    dws.push_back(to_host(be, dw));
  }
  EXPECT_TRUE(test::bitwise_equal(ys[0], ys[1]));
  EXPECT_TRUE(test::bitwise_equal(dxs[0], dxs[1]));
  EXPECT_TRUE(test::bitwise_equal(dws[0], dws[1]));
}

// ---- grouped matmul -------------------------------------------------------------------------

struct GroupedCase {
  std::vector<int32_t> counts;  // rows per expert
  int64_t N, K;
};

// Runs grouped forward + backward and the same with one dense matmul per expert, and compares.
void check_grouped_against_dense_loop(const GroupedCase& c, DType dt, int threads) {
  CpuBackend be(threads);
  const int64_t E = static_cast<int64_t>(c.counts.size()), N = c.N, K = c.K;
  std::vector<int32_t> off(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) off[e + 1] = off[e] + c.counts[e];
  const int64_t R = off[E];
  std::vector<double> x = random_normal(R * K, 20), w = random_normal(E * N * K, 21);
  std::vector<double> dy = random_normal(R * N, 22), dw0 = random_normal(E * N * K, 23);
  Tensor tx = to_tensor(be, x, {R, K}, dt), tw = to_tensor(be, w, {E, N, K}, dt);
  Tensor tdy = to_tensor(be, dy, {R, N}, dt), toff = to_tensor_i32(be, off, {E + 1});

  Tensor y = poisoned(be, {R, N}, dt), dx = poisoned(be, {R, K}, dt);
  Tensor dw = to_tensor(be, dw0, {E, N, K}, dt);
  be.grouped_matmul_forward(y, tx, tw, toff);
  be.grouped_matmul_backward(dx, dw, tdy, tx, tw, toff);

  Tensor y_ref = poisoned(be, {R, N}, dt), dx_ref = poisoned(be, {R, K}, dt);
  Tensor dw_ref = to_tensor(be, dw0, {E, N, K}, dt);
  for (int64_t e = 0; e < E; ++e) {
    if (c.counts[e] == 0) continue;
    Tensor we = tw.slice_flat(e * N * K, {N, K}), dwe = dw_ref.slice_flat(e * N * K, {N, K});
    Tensor ye = y_ref.rows(off[e], off[e + 1]), dxe = dx_ref.rows(off[e], off[e + 1]);
    be.matmul_forward(ye, tx.rows(off[e], off[e + 1]), we, false);
    be.matmul_backward(dxe, dwe, tdy.rows(off[e], off[e + 1]), tx.rows(off[e], off[e + 1]), we,
                       false);
  }
  double tol = dt == kF64 ? 1e-13 : 1e-5;
  EXPECT_TRUE(all_close(to_host(be, y), to_host(be, y_ref), tol, tol)) << "y";
  EXPECT_TRUE(all_close(to_host(be, dx), to_host(be, dx_ref), tol, tol)) << "dx";
  EXPECT_TRUE(all_close(to_host(be, dw), to_host(be, dw_ref), tol, tol)) << "dw";
}

TEST(GroupedMatmul, EqualsLoopOfDenseMatmulsWithEmptyExpert) {
  for (int threads : {1, 2}) {
    SCOPED_TRACE(threads);
    check_grouped_against_dense_loop({{5, 0, 9, 1, 3}, 67, 10}, kF64, threads);
    check_grouped_against_dense_loop({{5, 0, 9, 1, 3}, 67, 10}, kF32, threads);
  }
}

TEST(GroupedMatmul, EqualsDenseMatmulWhenOneExpertTakesAllRows) {
  for (int threads : {1, 2}) {
    SCOPED_TRACE(threads);
    check_grouped_against_dense_loop({{0, 0, 23, 0}, 6, 13}, kF64, threads);
    check_grouped_against_dense_loop({{17}, 9, 5}, kF32, threads);
  }
}

TEST(GroupedMatmul, BackwardMatchesFiniteDifferences) {
  CpuBackend be(2);
  const int64_t E = 4, N = 5, K = 6;
  const std::vector<int32_t> off = {0, 3, 3, 10, 11};  // expert 1 gets no rows
  const int64_t R = off[E];
  std::vector<double> x = random_normal(R * K, 30), w = random_normal(E * N * K, 31);
  Tensor toff = to_tensor_i32(be, off, {E + 1});
  RandomProjection proj(R * N, 32);
  auto loss = [&] {
    Tensor y = be.empty({R, N}, kF64);
    be.grouped_matmul_forward(y, to_tensor(be, x, {R, K}, kF64),
                              to_tensor(be, w, {E, N, K}, kF64), toff);
    return proj(to_host(be, y));
  };
  std::vector<double> dw0 = random_normal(E * N * K, 33);
  Tensor dx = poisoned(be, {R, K}, kF64), dw = to_tensor(be, dw0, {E, N, K}, kF64);
  be.grouped_matmul_backward(dx, dw, to_tensor(be, proj.r, {R, N}, kF64),
                             to_tensor(be, x, {R, K}, kF64), to_tensor(be, w, {E, N, K}, kF64),
                             toff);
  std::vector<double> gw = difference(to_host(be, dw), dw0);
  expect_gradient_matches(loss, x, to_host(be, dx), "grouped_matmul dx");
  expect_gradient_matches(loss, w, gw, "grouped_matmul dw");
  for (int64_t i = N * K; i < 2 * N * K; ++i) EXPECT_EQ(gw[i], 0.0) << "empty expert's dw";
}

TEST(GroupedMatmul, IsIndependentOfThreadCount) {
  const int64_t E = 5, N = 96, K = 80;
  const std::vector<int32_t> off = {0, 150, 150, 390, 391, 520};
  const int64_t R = off[E];
  std::vector<double> x = random_normal(R * K, 40), w = random_normal(E * N * K, 41);
  std::vector<double> dy = random_normal(R * N, 42);
  std::vector<std::vector<double>> results[3];
  for (int threads : {1, 2}) {
    CpuBackend be(threads);
    Tensor tx = to_tensor(be, x, {R, K}, kF32), tw = to_tensor(be, w, {E, N, K}, kF32);
    Tensor toff = to_tensor_i32(be, off, {E + 1});
    Tensor y = be.empty({R, N}, kF32), dx = be.empty({R, K}, kF32), dw = be.zeros({E, N, K}, kF32);
    be.grouped_matmul_forward(y, tx, tw, toff);
    be.grouped_matmul_backward(dx, dw, to_tensor(be, dy, {R, N}, kF32), tx, tw, toff);
    int i = 0;
    for (const Tensor* t : {&y, &dx, &dw}) results[i++].push_back(to_host(be, *t));
  }
  for (auto& r : results) EXPECT_TRUE(test::bitwise_equal(r[0], r[1]));
}

TEST(GroupedMatmul, RejectsBadOffsets) {
  CpuBackend be(1);
  Tensor x = be.zeros({6, 4}, kF32), w = be.zeros({2, 3, 4}, kF32), y = be.empty({6, 3}, kF32);
  EXPECT_THROW(be.grouped_matmul_forward(y, x, w, to_tensor_i32(be, {0, 2, 5}, {3})), Error);
  EXPECT_THROW(be.grouped_matmul_forward(y, x, w, to_tensor_i32(be, {0, 4, 3, 6}, {4})), Error);
  EXPECT_THROW(be.grouped_matmul_forward(y, x, w, to_tensor_i32(be, {0, 7, 6}, {3})), Error);
  EXPECT_THROW(be.grouped_matmul_forward(y, x, w, to_tensor_i32(be, {1, 2, 6}, {3})), Error);
}

}  // namespace
}  // namespace moe
