// Tests of the CPU loss ops: cross_entropy, lb, z, sp and cp. Each backward pass is checked by
// central finite differences in double; forwards against hand-computed values, a naive
// log-softmax, and f32 against f64. Accumulating backward outputs are pre-filled with random
// values (checked as +=), overwriting ones with NaN (checked fully written).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "backend/cpu/cpu_backend.h"
#include "support/moe_ops_testing.h"

namespace moe::test {
namespace {

constexpr DType kF64 = DType::kF64;
constexpr DType kF32 = DType::kF32;

// ---- cross-entropy -----------------------------------------------------------------------------

struct CeOut {
  Vec loss, lse;
};

CeOut ce_forward(CpuBackend& be, const Vec& logits, const std::vector<int32_t>& targets,
                 int64_t v, DType dt = kF64) {
  const int64_t n = static_cast<int64_t>(targets.size());
  Tensor loss = make_tensor(be, {n}, dt, nan_vec(n));
  Tensor lse = make_tensor(be, {n}, dt, nan_vec(n));
  be.cross_entropy_forward(loss, lse, make_tensor(be, {n, v}, dt, logits),
                           make_index(be, {n}, targets));
  return {read(be, loss), read(be, lse)};
}

TEST(CrossEntropy, MatchesNaiveLogSoftmaxAndIgnoresNegativeTargets) {
  CpuBackend be(2);
  Rng rng(1);
  const int64_t n = 6, v = 9;
  Vec logits = random_vec(n * v, rng, -3, 3);
  for (int64_t j = 0; j < v; ++j) logits[2 * v + j] += 1000.0;  // stability: row far from 0
  std::vector<int32_t> targets = {3, -1, 8, 0, -100, 5};
  CeOut out = ce_forward(be, logits, targets, v);
  for (int64_t t = 0; t < n; ++t) {
    const double shift = t == 2 ? 1000.0 : 0.0;  // naive formula on the shifted-back row
    double z = 0;
    for (int64_t j = 0; j < v; ++j) z += std::exp(logits[t * v + j] - shift);
    const double lse = std::log(z) + shift;
    EXPECT_NEAR(out.lse[t], lse, 1e-12 * std::max(1.0, std::fabs(lse)));
    const double nll = targets[t] < 0 ? 0.0 : lse - logits[t * v + targets[t]];
    EXPECT_NEAR(out.loss[t], nll, 1e-10) << "token " << t;
  }
  CeOut f = ce_forward(be, logits, targets, v, kF32);
  expect_close(f.loss, out.loss, 2e-4, 1e-5, "f32 nll");
  expect_close(f.lse, out.lse, 2e-4, 1e-5, "f32 lse");
}

TEST(CrossEntropy, BackwardFiniteDifferences) {
  CpuBackend be(2);
  Rng rng(2);
  const int64_t n = 5, v = 7;
  const float scale = 0.37f;
  Vec logits = random_vec(n * v, rng, -2, 2);
  std::vector<int32_t> targets = {1, -1, 6, 0, 3};
  auto loss = [&](const Vec& x) {
    Vec l = ce_forward(be, x, targets, v).loss;
    return scale * std::accumulate(l.begin(), l.end(), 0.0);
  };
  CeOut out = ce_forward(be, logits, targets, v);
  Tensor dlogits = make_tensor(be, {n, v}, kF64, nan_vec(n * v));
  be.cross_entropy_backward(dlogits, make_tensor(be, {n, v}, kF64, logits),
                            make_tensor(be, {n}, kF64, out.lse), make_index(be, {n}, targets),
                            scale);
  expect_grad(loss, logits, read(be, dlogits), "dlogits", 1e-9, 1e-7);
}

TEST(CrossEntropy, RejectsTargetOutsideVocabulary) {
  CpuBackend be(1);
  EXPECT_THROW(ce_forward(be, Vec(6, 0.0), {0, 3}, 3), Error);
}

// ---- load balance ------------------------------------------------------------------------------

double lb_forward(CpuBackend& be, const Vec& probs, const std::vector<int32_t>& idx, int64_t n,
                  int64_t e, DType dt = kF64) {
  const int64_t k = static_cast<int64_t>(idx.size()) / n;
  Tensor loss = make_tensor(be, {1}, dt, nan_vec(1));
  be.lb_loss_forward(loss, make_tensor(be, {n, e}, dt, probs), make_index(be, {n, k}, idx));
  return read(be, loss)[0];
}

TEST(LbLoss, UniformRoutingGivesOne) {
  CpuBackend be(1);
  // 4 tokens, 4 experts, uniform probabilities; every expert gets the same number of pairs.
  EXPECT_DOUBLE_EQ(lb_forward(be, Vec(16, 0.25), {0, 1, 2, 3}, 4, 4), 1.0);
  EXPECT_DOUBLE_EQ(lb_forward(be, Vec(16, 0.25), {0, 1, 2, 3, 1, 0, 3, 2}, 4, 4), 1.0);
  // Collapsed routing: every token to expert 0 with s(0) = 1 gives the maximum E.
  Vec collapsed(16, 0.0);
  for (int t = 0; t < 4; ++t) collapsed[t * 4] = 1.0;
  EXPECT_DOUBLE_EQ(lb_forward(be, collapsed, {0, 0, 0, 0}, 4, 4), 4.0);
}

TEST(LbLoss, BackwardFiniteDifferencesAndFloat32) {
  CpuBackend be(2);
  Rng rng(4);
  const int64_t n = 6, e = 5, k = 2;
  Vec probs = random_vec(n * e, rng, 0, 1);
  std::vector<int32_t> idx = {0, 1, 1, 2, 4, 0, 1, 3, 1, 4, 2, 1};
  const float coef = 0.3f;
  auto loss = [&](const Vec& p) { return coef * lb_forward(be, p, idx, n, e); };
  Vec prefill = random_vec(n * e, rng);
  Tensor dprobs = make_tensor(be, {n, e}, kF64, prefill);
  be.lb_loss_backward(dprobs, make_tensor(be, {n, e}, kF64, probs), make_index(be, {n, k}, idx),
                      coef);
  expect_grad(loss, probs, sub_vec(read(be, dprobs), prefill), "dprobs accumulates", 1e-9, 1e-7);
  EXPECT_NEAR(lb_forward(be, probs, idx, n, e, kF32), lb_forward(be, probs, idx, n, e), 1e-6);
}

// ---- z-loss ------------------------------------------------------------------------------------

double z_forward(CpuBackend& be, const Vec& logits, int64_t n, int64_t e, DType dt = kF64) {
  Tensor loss = make_tensor(be, {1}, dt, nan_vec(1));
  be.z_loss_forward(loss, make_tensor(be, {n, e}, dt, logits));
  return read(be, loss)[0];
}

TEST(ZLoss, ForwardBackward) {
  CpuBackend be(2);
  // Hand value: two tokens with E equal logits 0 -> lse = log E.
  EXPECT_NEAR(z_forward(be, Vec(8, 0.0), 2, 4), std::log(4.0) * std::log(4.0), 1e-15);
  Rng rng(6);
  const int64_t n = 5, e = 6;
  const float coef = 0.7f;
  Vec logits = random_vec(n * e, rng, -3, 3);
  EXPECT_NEAR(z_forward(be, logits, n, e, kF32), z_forward(be, logits, n, e), 1e-5);
  Vec prefill = random_vec(n * e, rng);
  Tensor dlogits = make_tensor(be, {n, e}, kF64, prefill);
  be.z_loss_backward(dlogits, make_tensor(be, {n, e}, kF64, logits), coef);
  expect_grad([&](const Vec& x) { return coef * z_forward(be, x, n, e); }, logits,
              sub_vec(read(be, dlogits), prefill), "dlogits accumulates", 1e-9, 1e-7);
}

// ---- specialization (sp) -----------------------------------------------------------------------

double sp_forward(CpuBackend& be, const Vec& z, const std::vector<int32_t>& token_row, int64_t n,
                  int64_t f, DType dt = kF64) {
  const int64_t r = static_cast<int64_t>(token_row.size());
  Tensor loss = make_tensor(be, {1}, dt, nan_vec(1));
  be.sp_loss_forward(loss, make_tensor(be, {r, f}, dt, z), make_index(be, {n, r / n}, token_row));
  return read(be, loss)[0];
}

TEST(SpLoss, KnownCosines) {
  CpuBackend be(1);
  // k = 2. Token 0: rows 0 and 3, cos 45 degrees (cos^2 = 1/2, two ordered pairs -> 1).
  // Token 1: rows 2 and 1, orthogonal -> 0. R = (1 + 0) / 2.
  Vec z = {1, 0, /*row1*/ 0, 5, /*row2*/ 3, 0, /*row3*/ 2, 2};
  EXPECT_NEAR(sp_forward(be, z, {0, 3, 2, 1}, 2, 2), 0.5, 1e-15);
  // k = 3, one token: x, x, -y. Pairs: cos(x,x)=1, cos(x,-y)=0 twice -> 2 * (1 + 0 + 0) = 2.
  EXPECT_NEAR(sp_forward(be, {1, 0, 2, 0, 0, -1}, {0, 1, 2}, 1, 2), 2.0, 1e-15);
  // A zero row: its norm is floored at 1e-12, so its cosines are 0, not NaN.
  EXPECT_EQ(sp_forward(be, {0, 0, 1, 1}, {0, 1}, 1, 2), 0.0);
}

TEST(SpLoss, SingleExpertRoutingIsExactlyZero) {
  CpuBackend be(1);
  Rng rng(7);
  Vec z = random_vec(4 * 3, rng);
  EXPECT_EQ(sp_forward(be, z, {2, 0, 3, 1}, 4, 3), 0.0);
  Vec prefill = random_vec(z.size(), rng);
  Tensor dz = make_tensor(be, {4, 3}, kF64, prefill);
  be.sp_loss_backward(dz, make_tensor(be, {4, 3}, kF64, z), make_index(be, {4, 1}, {2, 0, 3, 1}),
                      1.0f);
  EXPECT_EQ(read(be, dz), prefill) << "k = 1 must leave dz untouched";
}

TEST(SpLoss, BackwardFiniteDifferences) {
  CpuBackend be(2);
  Rng rng(8);
  const int64_t n = 4, f = 5;
  const float coef = 1.3f;
  for (int64_t k : {2, 3}) {
    SCOPED_TRACE(testing::Message() << "k=" << k);
    std::vector<int32_t> token_row(n * k);
    std::iota(token_row.begin(), token_row.end(), 0);
    shuffle(token_row, rng);
    Vec z = random_vec(n * k * f, rng);
    EXPECT_NEAR(sp_forward(be, z, token_row, n, f, kF32), sp_forward(be, z, token_row, n, f), 1e-5);
    Vec prefill = random_vec(z.size(), rng);
    Tensor dz = make_tensor(be, {n * k, f}, kF64, prefill);
    be.sp_loss_backward(dz, make_tensor(be, {n * k, f}, kF64, z),
                        make_index(be, {n, k}, token_row), coef);
    expect_grad([&](const Vec& x) { return coef * sp_forward(be, x, token_row, n, f); }, z,
                sub_vec(read(be, dz), prefill), "dz accumulates", 1e-8, 1e-6);
  }
}

TEST(SpLoss, RejectsMismatchedShapes) {
  CpuBackend be(1);
  Tensor loss = make_tensor(be, {1}, kF64, {0});
  Tensor z = make_tensor(be, {4, 2}, kF64, Vec(8, 1));
  EXPECT_THROW(be.sp_loss_forward(loss, z, make_index(be, {3, 1}, {0, 1, 2})), Error);
  EXPECT_THROW(be.sp_loss_forward(loss, z, make_index(be, {2, 2}, {0, 1, 2, 4})), Error);
}

// ---- coupling (cp) -----------------------------------------------------------------------------

double cp_forward(CpuBackend& be, const Vec& masses, int64_t m, int64_t n, DType dt = kF64) {
  Tensor loss = make_tensor(be, {1}, dt, nan_vec(1));
  be.cp_loss_forward(loss, make_tensor(be, {m, n}, dt, masses));
  return read(be, loss)[0];
}

TEST(CpLoss, KnownMasses) {
  CpuBackend be(1);
  // Token 0: 0.5*0.2 + 0.2*1.0 = 0.3; token 1: 1.0*0.4 + 0.4*0.5 = 0.6; R = -(0.9)/2.
  Vec masses = {0.5, 1.0, /*layer 1*/ 0.2, 0.4, /*layer 2*/ 1.0, 0.5};
  EXPECT_NEAR(cp_forward(be, masses, 3, 2), -0.45, 1e-15);
  EXPECT_NEAR(cp_forward(be, masses, 3, 2, kF32), -0.45, 1e-7);
  EXPECT_EQ(cp_forward(be, {0.3, 0.9}, 1, 2), 0.0) << "one MoE layer has no adjacent pair";
  Tensor dm = make_tensor(be, {1, 2}, kF64, nan_vec(2));
  be.cp_loss_backward(dm, make_tensor(be, {1, 2}, kF64, {0.3, 0.9}), 1.0f);
  EXPECT_EQ(read(be, dm), (Vec{0.0, 0.0}));
}

TEST(CpLoss, BackwardFiniteDifferencesOverwrites) {
  CpuBackend be(2);
  Rng rng(9);
  const int64_t m = 3, n = 5;
  const float coef = 0.8f;
  Vec masses = random_vec(m * n, rng, 0, 1);
  Tensor dm = make_tensor(be, {m, n}, kF64, nan_vec(m * n));
  be.cp_loss_backward(dm, make_tensor(be, {m, n}, kF64, masses), coef);
  expect_grad([&](const Vec& x) { return coef * cp_forward(be, x, m, n); }, masses, read(be, dm),
              "dmasses", 1e-10, 1e-8);
}

TEST(LossOps, ResultsDoNotDependOnTheThreadCount) {
  const int64_t n = 12000, e = 8, k = 3, f = 24, v = 50;  // every loop above the 1-thread cutoff
  Rng rng(78);
  const Vec logits = random_vec(n * e, rng, -3, 3), z = random_vec(n * k * f, rng);
  const Vec probs = random_vec(n * e, rng, 0, 1), vocab_logits = random_vec(n * v, rng, -4, 4);
  const Vec masses = random_vec(3 * n, rng, 0, 1);
  std::vector<int32_t> idx(n * k), token_row(n * k), targets(n);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t s = 0; s < k; ++s) idx[t * k + s] = static_cast<int32_t>((t + 3 * s) % e);
    targets[t] = static_cast<int32_t>(rng.below(v + 1)) - 1;  // includes ignored (-1)
  }
  std::iota(token_row.begin(), token_row.end(), 0);
  shuffle(token_row, rng);
  auto run = [&](int threads) {
    CpuBackend be(threads);
    const DType dt = DType::kF32;
    Tensor scalars = make_tensor(be, {5}, dt, nan_vec(5));
    Tensor lb = scalars.slice_flat(0, {1}), zl = scalars.slice_flat(1, {1});
    Tensor sp = scalars.slice_flat(2, {1}), cp = scalars.slice_flat(3, {1});
    Tensor p = make_tensor(be, {n, e}, dt, probs), r = make_tensor(be, {n, e}, dt, logits);
    Tensor zt = make_tensor(be, {n * k, f}, dt, z), m = make_tensor(be, {3, n}, dt, masses);
    Tensor it = make_index(be, {n, k}, idx), tr = make_index(be, {n, k}, token_row);
    be.lb_loss_forward(lb, p, it);
    be.z_loss_forward(zl, r);
    be.sp_loss_forward(sp, zt, tr);
    be.cp_loss_forward(cp, m);
    Tensor dp = make_tensor(be, {n, e}, dt, Vec(n * e, 0.0));
    be.lb_loss_backward(dp, p, it, 0.5f);
    be.z_loss_backward(dp, r, 0.25f);
    Tensor dz = make_tensor(be, {n * k, f}, dt, Vec(n * k * f, 0.0));
    be.sp_loss_backward(dz, zt, tr, 0.75f);
    Tensor dm = make_tensor(be, {3, n}, dt, nan_vec(3 * n));
    be.cp_loss_backward(dm, m, 0.5f);
    Tensor nll = be.empty({n}, dt), lse = be.empty({n}, dt), dl = be.empty({n, v}, dt);
    Tensor tg = make_index(be, {n}, targets), vl = make_tensor(be, {n, v}, dt, vocab_logits);
    be.cross_entropy_forward(nll, lse, vl, tg);
    be.cross_entropy_backward(dl, vl, lse, tg, 0.1f);
    Vec all;
    for (const Tensor& t : {scalars.slice_flat(0, {4}), dp, dz, dm, nll, lse, dl}) {
      Vec part = read(be, t);
      all.insert(all.end(), part.begin(), part.end());
    }
    return all;
  };
  EXPECT_TRUE(bitwise_equal(run(2), run(1)));
}

}  // namespace
}  // namespace moe::test
