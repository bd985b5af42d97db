// Tests of the CPU routing and dispatch ops: router_forward / router_backward, topk_mass,
// expert_load_accumulate, balance_bias_update, moe_dispatch_plan, moe_permute(_backward) and
// moe_unpermute(_backward). Backward passes are checked by central finite differences in double;
// forward passes against hand-computed examples and f32 against f64. Overwritten outputs are
// pre-filled with NaN, accumulated ones with random values.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "backend/cpu/cpu_backend.h"
#include "support/moe_ops_testing.h"

namespace moe::test {
namespace {

constexpr DType kF64 = DType::kF64;

struct RouterOut {
  Vec probs, weight;
  std::vector<int32_t> idx;
};

RouterOut run_router(CpuBackend& be, const Vec& logits, const Vec& bias, int64_t n, int64_t e,
                     int64_t k, bool norm, DType dt = kF64) {
  Tensor r = make_tensor(be, {n, e}, dt, logits);
  Tensor b = bias.empty() ? Tensor() : make_tensor(be, {e}, dt, bias);
  Tensor probs = make_tensor(be, {n, e}, dt, nan_vec(n * e));
  Tensor weight = make_tensor(be, {n, k}, dt, nan_vec(n * k));
  Tensor idx = make_index(be, {n, k}, std::vector<int32_t>(n * k, -7));
  be.router_forward(probs, idx, weight, r, b, norm);
  return {read(be, probs), read(be, weight), read_index(be, idx)};
}

// Logits whose top-k selection under `bias` has a margin of at least 0.03 in s + bias between the
// k-th and the (k+1)-th expert, so finite differences never flip the selection. Each token's row
// is redrawn until it has the margin.
Vec logits_with_margin(CpuBackend& be, Rng& rng, const Vec& bias, int64_t n,
                       int64_t e, int64_t k) {
  Vec logits;
  for (int64_t t = 0; t < n; ++t) {
    bool ok = false;
    for (int attempt = 0; attempt < 1000 && !ok; ++attempt) {
      Vec row = random_vec(e, rng, -2.0, 2.0);
      RouterOut out = run_router(be, row, bias, 1, e, k, false);
      Vec score(e);
      for (int64_t j = 0; j < e; ++j) score[j] = out.probs[j] + (bias.empty() ? 0 : bias[j]);
      std::sort(score.begin(), score.end(), std::greater<double>());
      ok = k == e || score[k - 1] - score[k] > 0.03;
      if (ok) logits.insert(logits.end(), row.begin(), row.end());
    }
    if (!ok) ADD_FAILURE() << "no logits with a top-k margin found for token " << t;
  }
  return logits;
}

TEST(RouterForward, SoftmaxAndDescendingTopK) {
  CpuBackend be(1);
  // token 0: descending order of s is 1, 2, 0, 3; token 1: all equal -> lower indices first.
  Vec logits = {1, 3, 2, 0, 0.5, 0.5, 0.5, 0.5};
  RouterOut out = run_router(be, logits, {}, 2, 4, 2, false);
  EXPECT_EQ(out.idx, (std::vector<int32_t>{1, 2, 0, 1}));
  double z = std::exp(1) + std::exp(3) + std::exp(2) + std::exp(0);
  Vec expected_probs = {std::exp(1) / z, std::exp(3) / z, std::exp(2) / z, 1 / z,
                        0.25, 0.25, 0.25, 0.25};
  expect_close(out.probs, expected_probs, 1e-15, 1e-13, "probs");
  expect_close(out.weight, {std::exp(3) / z, std::exp(2) / z, 0.25, 0.25}, 1e-15, 1e-13,
               "weight");
  RouterOut normed = run_router(be, logits, {}, 2, 4, 2, true);
  double sel = std::exp(3) + std::exp(2);
  expect_close(normed.weight, {std::exp(3) / sel, std::exp(2) / sel, 0.5, 0.5}, 1e-15, 1e-13,
               "normalised weight");
}

TEST(RouterForward, TiesPickTheLowerIndex) {
  CpuBackend be(1);
  // Experts 1 and 3 tie for first, 0 and 2 tie for third.
  RouterOut out = run_router(be, {0, 2, 0, 2}, {}, 1, 4, 3, false);
  EXPECT_EQ(out.idx, (std::vector<int32_t>{1, 3, 0}));
  // A tie created by the bias (s + b equal) also goes to the lower index.
  // s = (0.21, 0.58, 0.21); s + b = (0.61, 0.58, 0.61), experts 0 and 2 tied exactly.
  RouterOut biased = run_router(be, {0.0, 1.0, 0.0}, {0.4, 0.0, 0.4}, 1, 3, 2, false);
  EXPECT_EQ(biased.idx, (std::vector<int32_t>{0, 2}));
}

TEST(RouterForward, BiasChangesSelectionButNotWeights) {
  CpuBackend be(1);
  Vec logits = {0.0, 0.1, 0.0, 0.0};
  RouterOut plain = run_router(be, logits, {}, 1, 4, 1, false);
  RouterOut biased = run_router(be, logits, {0, 0, 1, 0}, 1, 4, 1, false);
  EXPECT_EQ(plain.idx, (std::vector<int32_t>{1}));
  EXPECT_EQ(biased.idx, (std::vector<int32_t>{2}));
  expect_close(biased.probs, plain.probs, 0, 0, "probs do not see the bias");
  EXPECT_DOUBLE_EQ(biased.weight[0], plain.probs[2]);
  // norm_topk with k = 1 gives weight 1.
  EXPECT_DOUBLE_EQ(run_router(be, logits, {0, 0, 1, 0}, 1, 4, 1, true).weight[0], 1.0);
}

TEST(RouterForward, Float32AgreesWithFloat64) {
  CpuBackend be(2);
  Rng rng(11);
  const int64_t n = 37, e = 8, k = 2;
  Vec bias = random_vec(e, rng, -0.05, 0.05);
  Vec logits = logits_with_margin(be, rng, bias, n, e, k);
  for (bool norm : {false, true}) {
    RouterOut d = run_router(be, logits, bias, n, e, k, norm, kF64);
    RouterOut f = run_router(be, logits, bias, n, e, k, norm, DType::kF32);
    EXPECT_EQ(f.idx, d.idx);
    expect_close(f.probs, d.probs, 1e-6, 1e-5, "f32 probs");
    expect_close(f.weight, d.weight, 1e-6, 1e-5, "f32 weight");
  }
}

// L = <gp, probs> + <gw, topk_weight> with the selection of the unperturbed logits held fixed.
void check_router_backward(bool norm, bool with_bias, bool with_dprobs, int64_t k) {
  CpuBackend be(2);
  Rng rng(100 + 10 * norm + 2 * with_bias + with_dprobs + 1000 * k);
  const int64_t n = 6, e = 7;
  Vec bias = with_bias ? random_vec(e, rng, -0.1, 0.1) : Vec{};
  Vec logits = logits_with_margin(be, rng, bias, n, e, k);
  Vec gp = with_dprobs ? random_vec(n * e, rng) : Vec(n * e, 0.0);
  Vec gw = random_vec(n * k, rng);
  const RouterOut base = run_router(be, logits, bias, n, e, k, norm);
  auto loss = [&](const Vec& x) {
    RouterOut out = run_router(be, x, bias, n, e, k, norm);
    EXPECT_EQ(out.idx, base.idx) << "a finite-difference step flipped the top-k selection";
    return dot(gp, out.probs) + dot(gw, out.weight);
  };
  Tensor dlogits = make_tensor(be, {n, e}, kF64, nan_vec(n * e));
  Tensor dprobs = with_dprobs ? make_tensor(be, {n, e}, kF64, gp) : Tensor();
  be.router_backward(dlogits, dprobs, make_tensor(be, {n, k}, kF64, gw),
                     make_tensor(be, {n, e}, kF64, base.probs),
                     make_index(be, {n, k}, base.idx), norm);
  expect_grad(loss, logits, read(be, dlogits), "dlogits", 1e-8, 1e-6);
}

TEST(RouterBackward, FiniteDifferences) {
  for (bool norm : {false, true}) {
    for (bool bias : {false, true}) {
      for (bool dprobs : {false, true}) {
        for (int64_t k : {1, 2, 3}) {
          SCOPED_TRACE(testing::Message() << "norm_topk=" << norm << " bias=" << bias
                                          << " dprobs=" << dprobs << " k=" << k);
          check_router_backward(norm, bias, dprobs, k);
        }
      }
    }
  }
}

TEST(RouterBackward, RejectsBadShapes) {
  CpuBackend be(1);
  Tensor probs = make_tensor(be, {2, 4}, kF64, Vec(8, 0.25));
  Tensor dlogits = make_tensor(be, {2, 4}, kF64, Vec(8, 0));
  Tensor idx = make_index(be, {2, 2}, {0, 1, 2, 4});  // 4 is not an expert
  Tensor dw = make_tensor(be, {2, 2}, kF64, Vec(4, 0));
  EXPECT_THROW(be.router_backward(dlogits, Tensor(), dw, probs, idx, false), Error);
  Tensor good_idx = make_index(be, {2, 2}, {0, 1, 2, 3});
  Tensor dw_bad = make_tensor(be, {2, 3}, kF64, Vec(6, 0));
  EXPECT_THROW(be.router_backward(dlogits, Tensor(), dw_bad, probs, good_idx, false), Error);
  Tensor dlogits_f32 = make_tensor(be, {2, 4}, DType::kF32, Vec(8, 0));
  EXPECT_THROW(be.router_backward(dlogits_f32, Tensor(), dw, probs, good_idx, false), Error);
  Tensor weight = make_tensor(be, {2, 5}, kF64, Vec(10, 0));
  Tensor idx5 = make_index(be, {2, 5}, std::vector<int32_t>(10, 0));
  EXPECT_THROW(be.router_forward(dlogits, idx5, weight, probs, Tensor(), false), Error)
      << "k > E must be rejected";
}

TEST(TopkMass, ForwardAndFiniteDifferences) {
  CpuBackend be(2);
  Rng rng(5);
  const int64_t n = 5, e = 6, k = 2;
  Vec probs = random_vec(n * e, rng, 0, 1);
  std::vector<int32_t> idx = {0, 5, 3, 2, 1, 4, 2, 0, 5, 3};
  Tensor idx_t = make_index(be, {n, k}, idx);
  auto mass_of = [&](const Vec& p, DType dt) {
    Tensor mass = make_tensor(be, {n}, dt, nan_vec(n));
    be.topk_mass_forward(mass, make_tensor(be, {n, e}, dt, p), idx_t);
    return read(be, mass);
  };
  Vec mass = mass_of(probs, kF64);
  for (int64_t t = 0; t < n; ++t) {
    EXPECT_DOUBLE_EQ(mass[t], probs[t * e + idx[t * k]] + probs[t * e + idx[t * k + 1]]);
  }
  expect_close(mass_of(probs, DType::kF32), mass, 1e-6, 1e-6, "f32 mass");
  Vec gm = random_vec(n, rng);
  Vec prefill = random_vec(n * e, rng);
  Tensor dprobs = make_tensor(be, {n, e}, kF64, prefill);
  be.topk_mass_backward(dprobs, make_tensor(be, {n}, kF64, gm), idx_t);
  expect_grad([&](const Vec& p) { return dot(gm, mass_of(p, kF64)); }, probs,
              sub_vec(read(be, dprobs), prefill), "dprobs accumulates", 1e-9, 1e-7);
}

TEST(ExpertLoad, AccumulatesCounts) {
  CpuBackend be(1);
  Tensor load = make_tensor(be, {4}, DType::kF32, {10, 0, 1, 2});
  be.expert_load_accumulate(load, make_index(be, {3, 2}, {0, 3, 3, 1, 3, 0}));
  EXPECT_EQ(read(be, load), (Vec{12, 1, 1, 5}));
  EXPECT_THROW(be.expert_load_accumulate(load, make_index(be, {1, 1}, {4})), Error);
}

TEST(BalanceBias, SignOfMeanMinusLoad) {
  CpuBackend be(1);
  for (DType dt : {DType::kF32, kF64}) {
    Tensor bias = make_tensor(be, {4}, dt, {0.5, 0.5, 0.5, 0.5});
    // mean load 2: under-loaded experts go up, over-loaded down, exactly-mean stays (sign 0).
    be.balance_bias_update(bias, make_tensor(be, {4}, dt, {1, 2, 4, 1}), 0.125f);
    EXPECT_EQ(read(be, bias), (Vec{0.625, 0.5, 0.375, 0.625}));
  }
  Tensor bias = make_tensor(be, {3}, kF64, {0, 0, 0});
  EXPECT_THROW(be.balance_bias_update(bias, make_tensor(be, {4}, kF64, {1, 2, 3, 4}), 1.f), Error);
}

TEST(RouterOps, ResultsDoNotDependOnTheThreadCount) {
  const int64_t n = 3000, e = 16, k = 4;
  Rng rng(77);
  const Vec logits = random_vec(n * e, rng, -3, 3), bias = random_vec(e, rng, -0.02, 0.02);
  const Vec gp = random_vec(n * e, rng), gw = random_vec(n * k, rng);
  auto run = [&](int threads) {
    CpuBackend be(threads);
    RouterOut out = run_router(be, logits, bias, n, e, k, true, DType::kF32);
    Tensor dlogits = make_tensor(be, {n, e}, DType::kF32, nan_vec(n * e));
    Tensor idx = make_index(be, {n, k}, out.idx);
    be.router_backward(dlogits, make_tensor(be, {n, e}, DType::kF32, gp),
                       make_tensor(be, {n, k}, DType::kF32, gw),
                       make_tensor(be, {n, e}, DType::kF32, out.probs), idx, true);
    Tensor mass = make_tensor(be, {n}, DType::kF32, nan_vec(n));
    be.topk_mass_forward(mass, make_tensor(be, {n, e}, DType::kF32, out.probs), idx);
    Vec all = out.probs;
    for (const Vec& part : {out.weight, read(be, dlogits), read(be, mass)}) {
      all.insert(all.end(), part.begin(), part.end());
    }
    all.insert(all.end(), out.idx.begin(), out.idx.end());
    return all;
  };
  EXPECT_TRUE(bitwise_equal(run(2), run(1)));
}

}  // namespace
}  // namespace moe::test
