// Tests of the CPU dispatch ops: moe_dispatch_plan (hand-written routings, stability, empty and
// full experts), moe_permute / moe_unpermute against naive loops, and their backward passes by
// finite differences in double. Overwritten outputs are pre-filled with NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "backend/cpu/cpu_backend.h"
#include "support/moe_ops_testing.h"

namespace moe::test {
namespace {

constexpr DType kF64 = DType::kF64;

struct Plan {
  std::vector<int32_t> offsets, row_token, token_row;
};

Plan make_plan(CpuBackend& be, const std::vector<int32_t>& idx, int64_t n, int64_t k,
               int64_t e) {
  Tensor offsets = make_index(be, {e + 1}, std::vector<int32_t>(e + 1, -1));
  Tensor row_token = make_index(be, {n * k}, std::vector<int32_t>(n * k, -1));
  Tensor token_row = make_index(be, {n, k}, std::vector<int32_t>(n * k, -1));
  be.moe_dispatch_plan(offsets, row_token, token_row, make_index(be, {n, k}, idx), e);
  return {read_index(be, offsets), read_index(be, row_token), read_index(be, token_row)};
}

// Random routing of n tokens to k distinct experts out of e.
std::vector<int32_t> random_routing(Rng& rng, int64_t n, int64_t k, int64_t e) {
  std::vector<int32_t> idx;
  std::vector<int32_t> experts(e);
  for (int64_t t = 0; t < n; ++t) {
    std::iota(experts.begin(), experts.end(), 0);
    shuffle(experts, rng);
    idx.insert(idx.end(), experts.begin(), experts.begin() + k);
  }
  return idx;
}

TEST(DispatchPlan, HandWrittenRoutingIsAStableSort) {
  CpuBackend be(1);
  // Tokens 0..2, k = 2, 4 experts (expert 3 gets nothing).
  Plan p = make_plan(be, {2, 0, 0, 2, 2, 1}, 3, 2, 4);
  EXPECT_EQ(p.offsets, (std::vector<int32_t>{0, 2, 3, 6, 6}));
  // expert 0: (t0,s1), (t1,s0); expert 1: (t2,s1); expert 2: (t0,s0), (t1,s1), (t2,s0)
  EXPECT_EQ(p.row_token, (std::vector<int32_t>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(p.token_row, (std::vector<int32_t>{3, 0, 1, 4, 5, 2}));
}

TEST(DispatchPlan, EmptyExpertsAndOneExpertWithAllTokens) {
  CpuBackend be(1);
  const int64_t n = 5;
  Plan p = make_plan(be, std::vector<int32_t>(n, 1), n, 1, 3);
  EXPECT_EQ(p.offsets, (std::vector<int32_t>{0, 0, 5, 5}));
  EXPECT_EQ(p.row_token, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(p.token_row, (std::vector<int32_t>{0, 1, 2, 3, 4}));
}

TEST(DispatchPlan, RandomRoutingIsConsistent) {
  CpuBackend be(2);
  Rng rng(3);
  const int64_t n = 50, k = 3, e = 8;
  std::vector<int32_t> idx = random_routing(rng, n, k, e);
  Plan p = make_plan(be, idx, n, k, e);
  ASSERT_EQ(p.offsets.front(), 0);
  ASSERT_EQ(p.offsets.back(), n * k);
  std::vector<int> seen(n * k, 0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t s = 0; s < k; ++s) {
      const int32_t row = p.token_row[t * k + s];
      ASSERT_GE(row, 0);
      ASSERT_LT(row, n * k);
      ++seen[row];
      EXPECT_EQ(p.row_token[row], t);
      const int32_t expert = idx[t * k + s];
      EXPECT_GE(row, p.offsets[expert]);
      EXPECT_LT(row, p.offsets[expert + 1]);
    }
  }
  for (int c : seen) EXPECT_EQ(c, 1) << "token_row must be a bijection onto the rows";
  for (int64_t ex = 0; ex < e; ++ex) {  // stable: tokens ascend within an expert
    for (int32_t r = p.offsets[ex] + 1; r < p.offsets[ex + 1]; ++r) {
      EXPECT_LT(p.row_token[r - 1], p.row_token[r]);
    }
  }
}

TEST(DispatchPlan, RejectsBadRouting) {
  CpuBackend be(1);
  EXPECT_THROW(make_plan(be, {0, 3}, 2, 1, 3), Error);   // expert 3 of 3
  EXPECT_THROW(make_plan(be, {0, -1}, 2, 1, 3), Error);  // negative
  Tensor offsets = make_index(be, {3}, {0, 0, 0});       // should be [E+1] = [4]
  Tensor rt = make_index(be, {2}, {0, 0});
  Tensor tr = make_index(be, {2, 1}, {0, 0});
  EXPECT_THROW(be.moe_dispatch_plan(offsets, rt, tr, make_index(be, {2, 1}, {0, 1}), 3), Error);
}

struct DispatchCase {
  int64_t n = 7, k = 3, e = 5, d = 4;
  std::vector<int32_t> idx;
  Plan plan;
};

DispatchCase make_case(CpuBackend& be, Rng& rng, int64_t k) {
  DispatchCase c;
  c.k = k;
  c.idx = random_routing(rng, c.n, c.k, c.e);
  c.plan = make_plan(be, c.idx, c.n, c.k, c.e);
  return c;
}

TEST(Permute, PermuteThenUnpermuteWithUnitWeightsIsKTimesIdentity) {
  CpuBackend be(2);
  Rng rng(21);
  for (int64_t k : {1, 2, 3}) {
    DispatchCase c = make_case(be, rng, k);
    const int64_t r = c.n * c.k;
    Vec x = random_vec(c.n * c.d, rng);
    Tensor xp = make_tensor(be, {r, c.d}, kF64, nan_vec(r * c.d));
    be.moe_permute(xp, make_tensor(be, {c.n, c.d}, kF64, x), make_index(be, {r}, c.plan.row_token));
    Vec xp_host = read(be, xp);
    for (int64_t row = 0; row < r; ++row) {
      for (int64_t j = 0; j < c.d; ++j) {
        ASSERT_EQ(xp_host[row * c.d + j], x[c.plan.row_token[row] * c.d + j]);
      }
    }
    Tensor y = make_tensor(be, {c.n, c.d}, kF64, nan_vec(c.n * c.d));
    be.moe_unpermute(y, xp, make_tensor(be, {c.n, c.k}, kF64, Vec(c.n * c.k, 1.0)),
                     make_index(be, {c.n, c.k}, c.plan.token_row), false);
    Vec expected(x.size());
    for (size_t i = 0; i < x.size(); ++i) expected[i] = k * x[i];
    expect_close(read(be, y), expected, 1e-15, 1e-15, "unpermute(permute(x), 1) = k x");
  }
}

TEST(Permute, UnpermuteAccumulateAndFloat32) {
  CpuBackend be(2);
  Rng rng(22);
  DispatchCase c = make_case(be, rng, 2);
  const int64_t r = c.n * c.k;
  Vec yp = random_vec(r * c.d, rng), w = random_vec(c.n * c.k, rng);
  Vec y0 = random_vec(c.n * c.d, rng);
  Vec expected(c.n * c.d, 0.0);
  for (int64_t t = 0; t < c.n; ++t) {
    for (int64_t s = 0; s < c.k; ++s) {
      for (int64_t j = 0; j < c.d; ++j) {
        expected[t * c.d + j] += w[t * c.k + s] * yp[c.plan.token_row[t * c.k + s] * c.d + j];
      }
    }
  }
  Tensor tr = make_index(be, {c.n, c.k}, c.plan.token_row);
  for (DType dt : {kF64, DType::kF32}) {
    const double tol = dt == kF64 ? 1e-14 : 1e-6;
    Tensor y = make_tensor(be, {c.n, c.d}, dt, y0);
    be.moe_unpermute(y, make_tensor(be, {r, c.d}, dt, yp), make_tensor(be, {c.n, c.k}, dt, w), tr,
                     true);
    expect_close(read(be, y), add_vec(y0, expected), tol, tol, "y += combine");
    Tensor y_new = make_tensor(be, {c.n, c.d}, dt, nan_vec(c.n * c.d));
    be.moe_unpermute(y_new, make_tensor(be, {r, c.d}, dt, yp), make_tensor(be, {c.n, c.k}, dt, w),
                     tr, false);
    expect_close(read(be, y_new), expected, tol, tol, "y = combine");
  }
}

TEST(PermuteBackward, FiniteDifferences) {
  CpuBackend be(2);
  Rng rng(23);
  for (int64_t k : {1, 2, 3}) {
    DispatchCase c = make_case(be, rng, k);
    const int64_t r = c.n * c.k;
    Tensor rt = make_index(be, {r}, c.plan.row_token);
    Vec x = random_vec(c.n * c.d, rng), g = random_vec(r * c.d, rng);
    auto loss = [&](const Vec& xv) {
      Tensor xp = be.empty({r, c.d}, kF64);
      be.moe_permute(xp, make_tensor(be, {c.n, c.d}, kF64, xv), rt);
      return dot(g, read(be, xp));
    };
    Tensor dx = make_tensor(be, {c.n, c.d}, kF64, nan_vec(c.n * c.d));
    be.moe_permute_backward(dx, make_tensor(be, {r, c.d}, kF64, g),
                            make_index(be, {c.n, c.k}, c.plan.token_row));
    expect_grad(loss, x, read(be, dx), "dx", 1e-9, 1e-8);
  }
}

TEST(UnpermuteBackward, FiniteDifferencesForRowsAndWeights) {
  CpuBackend be(2);
  Rng rng(24);
  for (int64_t k : {1, 2, 3}) {
    DispatchCase c = make_case(be, rng, k);
    const int64_t r = c.n * c.k;
    Tensor tr = make_index(be, {c.n, c.k}, c.plan.token_row);
    Vec yp = random_vec(r * c.d, rng), w = random_vec(c.n * c.k, rng);
    Vec g = random_vec(c.n * c.d, rng);
    auto loss = [&](const Vec& ypv, const Vec& wv) {
      Tensor y = be.empty({c.n, c.d}, kF64);
      be.moe_unpermute(y, make_tensor(be, {r, c.d}, kF64, ypv),
                       make_tensor(be, {c.n, c.k}, kF64, wv), tr, false);
      return dot(g, read(be, y));
    };
    Tensor dyp = make_tensor(be, {r, c.d}, kF64, nan_vec(r * c.d));
    Tensor dw = make_tensor(be, {c.n, c.k}, kF64, nan_vec(c.n * c.k));
    be.moe_unpermute_backward(dyp, dw, make_tensor(be, {c.n, c.d}, kF64, g),
                              make_tensor(be, {r, c.d}, kF64, yp),
                              make_tensor(be, {c.n, c.k}, kF64, w), tr);
    expect_grad([&](const Vec& v) { return loss(v, w); }, yp, read(be, dyp), "dyp", 1e-9, 1e-8);
    expect_grad([&](const Vec& v) { return loss(yp, v); }, w, read(be, dw), "dweight", 1e-9, 1e-8);
  }
}

TEST(Permute, RejectsOutOfRangeRows) {
  CpuBackend be(1);
  Tensor x = make_tensor(be, {2, 3}, kF64, Vec(6, 1));
  Tensor xp = make_tensor(be, {2, 3}, kF64, Vec(6, 0));
  EXPECT_THROW(be.moe_permute(xp, x, make_index(be, {2}, {0, 2})), Error);
  Tensor dx = make_tensor(be, {2, 3}, kF64, Vec(6, 0));
  EXPECT_THROW(be.moe_permute_backward(dx, xp, make_index(be, {2, 1}, {0, 5})), Error);
  EXPECT_THROW(be.moe_permute_backward(dx, xp, make_index(be, {1, 2}, {0, 1})), Error);
}

TEST(DispatchOps, ResultsDoNotDependOnTheThreadCount) {
  const int64_t n = 2000, k = 2, e = 8, d = 16, r = n * k;
  Rng rng(79);
  const std::vector<int32_t> idx = random_routing(rng, n, k, e);
  const Vec x = random_vec(n * d, rng), yp = random_vec(r * d, rng), w = random_vec(n * k, rng);
  const Vec dy = random_vec(n * d, rng), y0 = random_vec(n * d, rng);
  auto run = [&](int threads) {
    CpuBackend be(threads);
    const DType dt = DType::kF32;
    Plan p = make_plan(be, idx, n, k, e);
    Tensor rt = make_index(be, {r}, p.row_token), tr = make_index(be, {n, k}, p.token_row);
    Tensor xp = be.empty({r, d}, dt), dx = be.empty({n, d}, dt);
    Tensor y = make_tensor(be, {n, d}, dt, y0), dyp = be.empty({r, d}, dt);
    Tensor dw = be.empty({n, k}, dt), wt = make_tensor(be, {n, k}, dt, w);
    Tensor ypt = make_tensor(be, {r, d}, dt, yp);
    be.moe_permute(xp, make_tensor(be, {n, d}, dt, x), rt);
    be.moe_permute_backward(dx, ypt, tr);
    be.moe_unpermute(y, ypt, wt, tr, true);
    be.moe_unpermute_backward(dyp, dw, make_tensor(be, {n, d}, dt, dy), ypt, wt, tr);
    Vec all(p.offsets.begin(), p.offsets.end());
    all.insert(all.end(), p.token_row.begin(), p.token_row.end());
    for (const Tensor& t : {xp, dx, y, dyp, dw}) {
      Vec part = read(be, t);
      all.insert(all.end(), part.begin(), part.end());
    }
    return all;
  };
  EXPECT_TRUE(bitwise_equal(run(2), run(1)));
}

}  // namespace
}  // namespace moe::test
