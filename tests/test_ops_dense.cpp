// CpuBackend dense ops, part 1: embedding, RMSNorm, SwiGLU, RoPE, AdamW and global_norm_sq.
// Backward passes are checked against central finite differences in double on a random
// projection L = sum(R * out); forward passes against naive references written here; plus the
// accumulate/overwrite conventions, f32 vs f64 agreement and thread-count independence.
// (Matrix products: test_ops_dense_matmul.cpp; attention: test_ops_dense_attention.cpp.)
#include <cmath>
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

// ---- embedding ------------------------------------------------------------------------------

TEST(Embedding, ForwardGathersRows) {
  CpuBackend be(2);
  const int64_t V = 11, d = 67, N = 13;
  std::vector<double> table = random_normal(V * d, 1);
  std::vector<int32_t> ids = test::random_ints(N, V, 2);
  Tensor y = poisoned(be, {N, d}, kF64);
  be.embedding_forward(y, to_tensor_i32(be, ids, {N}), to_tensor(be, table, {V, d}, kF64));
  std::vector<double> want(N * d);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < d; ++c) want[n * d + c] = table[ids[n] * d + c];
  EXPECT_TRUE(test::bitwise_equal(to_host(be, y), want));
}

TEST(Embedding, BackwardAccumulatesRepeatedIdsAndMatchesFiniteDifferences) {
  CpuBackend be(2);
  const int64_t V = 7, d = 67, N = 29;  // N > V: ids repeat
  std::vector<double> table = random_normal(V * d, 3);
  std::vector<int32_t> ids = test::random_ints(N, V, 4);
  ids[0] = ids[1] = ids[5] = 3;
  Tensor tids = to_tensor_i32(be, ids, {N});
  RandomProjection proj(N * d, 5);
  auto loss = [&] {
    Tensor y = be.empty({N, d}, kF64);
    be.embedding_forward(y, tids, to_tensor(be, table, {V, d}, kF64));
    return proj(to_host(be, y));
  };
  std::vector<double> prefill = random_normal(V * d, 6);  // parameter grads accumulate
  Tensor dtable = to_tensor(be, prefill, {V, d}, kF64);
  be.embedding_backward(dtable, to_tensor(be, proj.r, {N, d}, kF64), tids);
  expect_gradient_matches(loss, table, difference(to_host(be, dtable), prefill),
                          "embedding dtable");
}

TEST(Embedding, RejectsOutOfRangeIds) {
  CpuBackend be(1);
  Tensor table = be.zeros({5, 3}, kF32);
  Tensor y = be.empty({2, 3}, kF32);
  EXPECT_THROW(be.embedding_forward(y, to_tensor_i32(be, {1, 5}, {2}), table), Error);
  EXPECT_THROW(be.embedding_forward(y, to_tensor_i32(be, {-1, 0}, {2}), table), Error);
  Tensor wrong = be.empty({2, 4}, kF32);
  EXPECT_THROW(be.embedding_forward(wrong, to_tensor_i32(be, {1, 0}, {2}), table), Error);
}

TEST(Embedding, BackwardIsIndependentOfThreadCount) {
  const int64_t V = 50, d = 96, N = 700;
  std::vector<double> dy = random_normal(N * d, 7);
  std::vector<int32_t> ids = test::random_ints(N, V, 8);
  std::vector<std::vector<double>> results;
  for (int threads : {1, 2}) {
    CpuBackend be(threads);
    Tensor dtable = to_tensor(be, random_normal(V * d, 9), {V, d}, kF32);
    be.embedding_backward(dtable, to_tensor(be, dy, {N, d}, kF32), to_tensor_i32(be, ids, {N}));
    results.push_back(to_host(be, dtable));
  }
  EXPECT_TRUE(test::bitwise_equal(results[0], results[1]));
}

// ---- RMSNorm --------------------------------------------------------------------------------

std::vector<double> rms_norm_reference(const std::vector<double>& x, const std::vector<double>& w,
                                       int64_t N, int64_t C, double eps) {
  std::vector<double> y(x.size());
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    double r = 1.0 / std::sqrt(ss / C + eps);
    for (int64_t c = 0; c < C; ++c) y[n * C + c] = x[n * C + c] * r * w[c];
  }
  return y;
}

TEST(RmsNorm, ForwardMatchesReferenceInF64AndF32) {
  CpuBackend be(2);
  const int64_t N = 9, C = 67;
  const float eps = 1e-5f;
  std::vector<double> x = random_normal(N * C, 10), w = random_normal(C, 11, 0.3, 1.0);
  std::vector<double> want = rms_norm_reference(x, w, N, C, eps);
  for (DType dt : {kF64, kF32}) {
    Tensor y = poisoned(be, {N, C}, dt), rstd = poisoned(be, {N}, dt);
    be.rms_norm_forward(y, rstd, to_tensor(be, x, {N, C}, dt), to_tensor(be, w, {C}, dt), eps);
    double tol = dt == kF64 ? 1e-13 : 2e-6;
    EXPECT_TRUE(all_close(to_host(be, y), want, tol, tol)) << dtype_name(dt);
    EXPECT_GT(to_host(be, rstd)[0], 0.0);
  }
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  CpuBackend be(2);
  const int64_t N = 5, C = 67;
  const float eps = 1e-6f;
  std::vector<double> x = random_normal(N * C, 12), w = random_normal(C, 13, 0.3, 1.0);
  RandomProjection proj(N * C, 14);
  auto forward = [&](Tensor& rstd) {
    Tensor y = be.empty({N, C}, kF64);
    be.rms_norm_forward(y, rstd, to_tensor(be, x, {N, C}, kF64), to_tensor(be, w, {C}, kF64),
                        eps);
    return to_host(be, y);
  };
  auto loss = [&] {
    Tensor rstd = be.empty({N}, kF64);
    return proj(forward(rstd));
  };
  Tensor rstd = be.empty({N}, kF64);
  forward(rstd);
  std::vector<double> dw0 = random_normal(C, 15), dx0 = random_normal(N * C, 16);
  Tensor tx = to_tensor(be, x, {N, C}, kF64), tw = to_tensor(be, w, {C}, kF64);
  Tensor dy = to_tensor(be, proj.r, {N, C}, kF64);
  Tensor dx = poisoned(be, {N, C}, kF64), dw = to_tensor(be, dw0, {C}, kF64);
  be.rms_norm_backward(dx, dw, dy, tx, tw, rstd, /*accumulate_dx=*/false);
  std::vector<double> gx = to_host(be, dx), gw = difference(to_host(be, dw), dw0);
  expect_gradient_matches(loss, x, gx, "rms_norm dx");
  expect_gradient_matches(loss, w, gw, "rms_norm dw");

  // accumulate_dx adds into the residual-stream gradient; dw keeps accumulating.
  Tensor dx_acc = to_tensor(be, dx0, {N, C}, kF64);
  be.rms_norm_backward(dx_acc, dw, dy, tx, tw, rstd, /*accumulate_dx=*/true);
  std::vector<double> want(N * C);
  for (size_t i = 0; i < want.size(); ++i) want[i] = dx0[i] + gx[i];
  EXPECT_TRUE(all_close(to_host(be, dx_acc), want, 1e-13, 1e-13));
  std::vector<double> want_dw(C);
  for (int64_t c = 0; c < C; ++c) want_dw[c] = dw0[c] + 2 * gw[c];
  EXPECT_TRUE(all_close(to_host(be, dw), want_dw, 1e-12, 1e-12));
}

TEST(RmsNorm, RejectsMismatchedShapes) {
  CpuBackend be(1);
  Tensor x = be.zeros({4, 8}, kF32), y = be.empty({4, 8}, kF32), rstd = be.empty({4}, kF32);
  Tensor w_bad = be.zeros({7}, kF32), rstd_bad = be.empty({3}, kF32);
  EXPECT_THROW(be.rms_norm_forward(y, rstd, x, w_bad, 1e-6f), Error);
  EXPECT_THROW(be.rms_norm_forward(y, rstd_bad, x, be.zeros({8}, kF32), 1e-6f), Error);
  EXPECT_THROW(be.rms_norm_forward(y, rstd, x, be.zeros({8}, kF64), 1e-6f), Error);
}

// ---- SwiGLU ---------------------------------------------------------------------------------

TEST(SwiGlu, ForwardAndBackward) {
  CpuBackend be(2);
  const int64_t R = 7, F = 67;
  std::vector<double> g = random_normal(R * F, 20, 3.0), u = random_normal(R * F, 21);
  g[0] = 40.0;   // saturated sigmoid
  g[1] = -40.0;  // exp overflow guard
  std::vector<double> want(R * F);
  for (int64_t i = 0; i < R * F; ++i) want[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  for (DType dt : {kF64, kF32}) {
    Tensor z = poisoned(be, {R, F}, dt);
    be.swiglu_forward(z, to_tensor(be, g, {R, F}, dt), to_tensor(be, u, {R, F}, dt));
    double tol = dt == kF64 ? 1e-14 : 1e-6;
    EXPECT_TRUE(all_close(to_host(be, z), want, tol, tol)) << dtype_name(dt);
  }
  RandomProjection proj(R * F, 22);
  auto loss = [&] {
    Tensor z = be.empty({R, F}, kF64);
    be.swiglu_forward(z, to_tensor(be, g, {R, F}, kF64), to_tensor(be, u, {R, F}, kF64));
    return proj(to_host(be, z));
  };
  Tensor dg = poisoned(be, {R, F}, kF64), du = poisoned(be, {R, F}, kF64);
  be.swiglu_backward(dg, du, to_tensor(be, proj.r, {R, F}, kF64), to_tensor(be, g, {R, F}, kF64),
                     to_tensor(be, u, {R, F}, kF64));
  expect_gradient_matches(loss, g, to_host(be, dg), "swiglu dgate");
  expect_gradient_matches(loss, u, to_host(be, du), "swiglu dup");
}

// The f32 path computes its exps with the CPU backend's vectorised exp (8 lanes plus a scalar
// tail): check it over the whole range against double math, saturation at both ends, NaN
// propagation, and that the vector/tail split does not depend on the thread count.
TEST(SwiGlu, F32ExpPathIsAccurateSaturatesAndPropagatesNan) {
  const int64_t R = 3, F = 1001;  // odd: every chunk ends in a scalar tail
  std::vector<double> g(R * F), u(R * F, 1.0);
  for (int64_t i = 0; i < R * F; ++i) g[i] = -100.0 + 200.0 * double(i) / double(R * F - 1);
  for (double& x : g) x = double(float(x));
  g[17] = std::nan("");
  std::vector<std::vector<double>> results;
  for (int threads : {1, 2}) {
    CpuBackend be(threads);
    Tensor z = poisoned(be, {R, F}, kF32), dg = poisoned(be, {R, F}, kF32);
    Tensor du = poisoned(be, {R, F}, kF32);
    Tensor tg = to_tensor(be, g, {R, F}, kF32), tu = to_tensor(be, u, {R, F}, kF32);
    be.swiglu_forward(z, tg, tu);
    be.swiglu_backward(dg, du, tu, tg, tu);
    std::vector<double> hz = to_host(be, z), hdg = to_host(be, dg);
    EXPECT_TRUE(std::isnan(hz[17]) && std::isnan(hdg[17])) << "NaN must propagate";
    hz[17] = hdg[17] = 0.0;
    std::vector<double> want_z(R * F), want_dg(R * F);
    for (int64_t i = 0; i < R * F; ++i) {
      double s = 1.0 / (1.0 + std::exp(-g[i]));
      want_z[i] = i == 17 ? 0.0 : g[i] * s;
      want_dg[i] = i == 17 ? 0.0 : s * (1 + g[i] * (1 - s));
    }
    EXPECT_TRUE(all_close(hz, want_z, 1e-30, 1e-6));
    // silu' = s (1 + g (1 - s)) cancels near its zero at g = -1.28: an absolute tolerance there.
    EXPECT_TRUE(all_close(hdg, want_dg, 2e-7, 1e-6));
    results.push_back(to_host(be, z));
  }
  EXPECT_TRUE(test::bitwise_equal(results[0], results[1]) ||
              (std::isnan(results[0][17]) && std::isnan(results[1][17])));
}

// ---- RoPE -----------------------------------------------------------------------------------

// Hugging Face Llama: inv_freq = 1 / theta^(arange(0, hd, 2) / hd), rotate_half pairing.
std::vector<double> rope_reference(const std::vector<double>& x, int64_t B, int64_t T, int64_t H,
                                   int64_t hd, double theta) {
  std::vector<double> y(x.size());
  const int64_t half = hd / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const double* xh = &x[((b * T + t) * H + h) * hd];
        double* yh = &y[((b * T + t) * H + h) * hd];
        for (int64_t i = 0; i < hd; ++i) {
          int64_t fi = i % half;
          double angle = t / std::pow(theta, double(2 * fi) / hd);
          double rotated = i < half ? -xh[i + half] : xh[i - half];
          yh[i] = xh[i] * std::cos(angle) + rotated * std::sin(angle);
        }
      }
  return y;
}

TEST(Rope, ForwardMatchesHuggingFaceFormula) {
  CpuBackend be(2);
  for (int64_t hd : {6, 10}) {
    const int64_t B = 2, T = 13, H = 3;
    const float theta = 10000.0f;
    std::vector<double> x = random_normal(B * T * H * hd, 30 + hd);
    std::vector<double> want = rope_reference(x, B, T, H, hd, theta);
    for (DType dt : {kF64, kF32}) {
      Tensor y = poisoned(be, {B * T, H * hd}, dt);
      be.rope_forward(y, to_tensor(be, x, {B * T, H * hd}, dt), B, T, H, hd, theta);
      double tol = dt == kF64 ? 1e-12 : 3e-6;
      EXPECT_TRUE(all_close(to_host(be, y), want, tol, tol)) << "hd " << hd << " "
                                                              << dtype_name(dt);
    }
  }
}

TEST(Rope, BackwardInvertsForwardInPlaceAndMatchesFiniteDifferences) {
  CpuBackend be(2);
  const int64_t B = 2, T = 5, H = 4, hd = 6;
  const float theta = 500.0f;
  std::vector<double> x = random_normal(B * T * H * hd, 40);
  // In place (y aliases x), then the backward pass (rotation by -angle) brings x back.
  Tensor t = to_tensor(be, x, {B * T, H * hd}, kF64);
  be.rope_forward(t, t, B, T, H, hd, theta);
  EXPECT_FALSE(all_close(to_host(be, t), x, 1e-3, 0));
  be.rope_backward(t, t, B, T, H, hd, theta);
  EXPECT_TRUE(all_close(to_host(be, t), x, 1e-13, 1e-13));

  RandomProjection proj(x.size(), 41);
  auto loss = [&] {
    Tensor y = be.empty({B * T, H * hd}, kF64);
    be.rope_forward(y, to_tensor(be, x, {B * T, H * hd}, kF64), B, T, H, hd, theta);
    return proj(to_host(be, y));
  };
  Tensor dx = poisoned(be, {B * T, H * hd}, kF64);
  be.rope_backward(dx, to_tensor(be, proj.r, {B * T, H * hd}, kF64), B, T, H, hd, theta);
  expect_gradient_matches(loss, x, to_host(be, dx), "rope dx");
}

TEST(Rope, RejectsOddHeadDimAndWrongShape) {
  CpuBackend be(1);
  Tensor x = be.zeros({10, 15}, kF32);
  EXPECT_THROW(be.rope_forward(x, x, 2, 5, 3, 5, 1e4f), Error);
  Tensor y = be.zeros({10, 12}, kF32);
  EXPECT_THROW(be.rope_forward(y, y, 2, 4, 2, 6, 1e4f), Error);
}

// ---- AdamW and global_norm_sq ---------------------------------------------------------------

// torch.optim.AdamW, written out: decay, moments, bias-corrected step.
void adamw_reference(std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                     const std::vector<double>& grad, const AdamWParams& hp) {
  const double bc1 = 1 - std::pow(double(hp.beta1), double(hp.step));
  const double bc2 = 1 - std::pow(double(hp.beta2), double(hp.step));
  for (size_t i = 0; i < p.size(); ++i) {
    double g = grad[i] * double(hp.grad_scale);
    p[i] *= 1 - double(hp.lr) * double(hp.weight_decay);
    m[i] = double(hp.beta1) * m[i] + (1 - double(hp.beta1)) * g;
    v[i] = double(hp.beta2) * v[i] + (1 - double(hp.beta2)) * g * g;
    double step_size = double(hp.lr) / bc1;
    double denom = std::sqrt(v[i]) / std::sqrt(bc2) + double(hp.eps);
    p[i] -= step_size * m[i] / denom;
  }
}

TEST(AdamW, ThreeStepsMatchHandComputedUpdate) {
  CpuBackend be(2);
  const int64_t n = 67;
  AdamWParams hp;
  hp.lr = 0.01f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-8f;
  hp.weight_decay = 0.1f;
  hp.grad_scale = 0.5f;
  for (DType dt : {kF64, kF32}) {
    std::vector<double> p = random_normal(n, 50), m(n, 0.0), v(n, 0.0);
    Tensor tp = to_tensor(be, p, {n}, dt), tm = be.zeros({n}, dt), tv = be.zeros({n}, dt);
    Tensor lowp = be.empty({n}, DType::kBF16);
    for (int64_t step = 1; step <= 3; ++step) {
      hp.step = step;
      std::vector<double> grad = random_normal(n, 60 + step);
      // Round the reference's inputs as the f32 run sees them.
      if (dt == kF32) for (double& g : grad) g = float(g);
      adamw_reference(p, m, v, grad, hp);
      be.adamw_step(tp, tm, tv, lowp, to_tensor(be, grad, {n}, dt), hp);
    }
    double tol = dt == kF64 ? 1e-12 : 2e-6;
    EXPECT_TRUE(all_close(to_host(be, tp), p, tol, tol)) << dtype_name(dt);
    EXPECT_TRUE(all_close(to_host(be, tm), m, tol, tol)) << dtype_name(dt);
    EXPECT_TRUE(all_close(to_host(be, tv), v, tol * 1e-2, tol)) << dtype_name(dt);
    // The bf16 copy holds the updated parameters to bf16 precision.
    EXPECT_TRUE(all_close(to_host(be, lowp), p, 0, 1.0 / 256)) << dtype_name(dt);
  }
}

TEST(AdamW, UndefinedLowPrecisionCopyIsIgnoredAndShapesAreChecked) {
  CpuBackend be(1);
  Tensor p = be.zeros({4}, kF32), m = be.zeros({4}, kF32), v = be.zeros({4}, kF32), none;
  AdamWParams hp;
  be.adamw_step(p, m, v, none, to_tensor(be, {1, -1, 2, -2}, {4}, kF32), hp);
  // First step with zero decay moves each coordinate by -lr * sign(g) (m_hat / sqrt(v_hat) = ±1).
  EXPECT_TRUE(all_close(to_host(be, p), {-1e-3, 1e-3, -1e-3, 1e-3}, 1e-9, 1e-5));
  Tensor bad = be.zeros({5}, kF32);
  EXPECT_THROW(be.adamw_step(p, m, v, none, bad, hp), Error);
  hp.step = 0;
  EXPECT_THROW(be.adamw_step(p, m, v, none, be.zeros({4}, kF32), hp), Error);
}

TEST(GlobalNormSq, AccumulatesSumOfSquaresIndependentOfThreads) {
  const int64_t n = 10007;  // several summation blocks, the last one partial
  std::vector<double> g = random_normal(n, 70);
  double want = 0;
  for (double x : g) want += double(float(x)) * double(float(x));
  std::vector<std::vector<double>> results;
  for (int threads : {1, 2}) {
    CpuBackend be(threads);
    Tensor out = to_tensor(be, {2.5}, {1}, kF32);  // += semantics
    be.global_norm_sq(out, to_tensor(be, g, {n}, kF32));
    results.push_back(to_host(be, out));
    EXPECT_NEAR(results.back()[0], 2.5 + want, 1e-6 * want);
  }
  EXPECT_TRUE(test::bitwise_equal(results[0], results[1]));
}

}  // namespace
}  // namespace moe
