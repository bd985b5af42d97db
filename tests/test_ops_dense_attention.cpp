// CpuBackend causal GQA attention: forward against a naive reference written here (scores,
// mask, softmax, lse), backward against finite differences in double, f32 vs f64 agreement,
// overwrite semantics (outputs pre-filled with NaN) and thread-count independence.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "support/gradcheck.h"

namespace moe {
namespace {

using test::all_close;
using test::expect_gradient_matches;
using test::poisoned;
using test::RandomProjection;
using test::random_normal;
using test::to_host;
using test::to_tensor;

constexpr DType kF64 = DType::kF64;
constexpr DType kF32 = DType::kF32;

struct Qkv {
  std::vector<double> q, k, v;
};

Qkv random_qkv(const AttnDims& d, uint64_t seed) {
  const int64_t rows = d.batch * d.seq;
  return {random_normal(rows * d.heads * d.head_dim, seed),
          random_normal(rows * d.kv_heads * d.head_dim, seed + 1),
          random_normal(rows * d.kv_heads * d.head_dim, seed + 2)};
}

// The textbook computation, one (batch, head, query) at a time.
void attention_reference(const Qkv& in, const AttnDims& d, std::vector<double>& out,
                         std::vector<double>& lse) {
  const int64_t B = d.batch, T = d.seq, H = d.heads, KV = d.kv_heads, hd = d.head_dim;
  out.assign(B * T * H * hd, 0.0);
  lse.assign(B * H * T, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(i + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < hd; ++c)
            dot += in.q[((b * T + i) * H + h) * hd + c] * in.k[((b * T + j) * KV + g) * hd + c];
          s[j] = dot / std::sqrt(double(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double x : s) sum += std::exp(x - mx);
        lse[(b * H + h) * T + i] = mx + std::log(sum);
        for (int64_t j = 0; j <= i; ++j) {
          double p = std::exp(s[j] - mx) / sum;
          for (int64_t c = 0; c < hd; ++c)
            out[((b * T + i) * H + h) * hd + c] += p * in.v[((b * T + j) * KV + g) * hd + c];
        }
      }
    }
}

struct AttnTensors {
  Tensor q, k, v, out, lse;
};

AttnTensors run_forward(Backend& be, const Qkv& in, const AttnDims& d, DType dt) {
  const int64_t rows = d.batch * d.seq;
  AttnTensors t;
  t.q = to_tensor(be, in.q, {rows, d.heads * d.head_dim}, dt);
  t.k = to_tensor(be, in.k, {rows, d.kv_heads * d.head_dim}, dt);
  t.v = to_tensor(be, in.v, {rows, d.kv_heads * d.head_dim}, dt);
  t.out = poisoned(be, {rows, d.heads * d.head_dim}, dt);
  t.lse = poisoned(be, {d.batch, d.heads, d.seq}, dt);
  be.attention_forward(t.out, t.lse, t.q, t.k, t.v, d);
  return t;
}

AttnDims dims(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hd) {
  AttnDims d;
  d.batch = B;
  d.seq = T;
  d.heads = H;
  d.kv_heads = KV;
  d.head_dim = hd;
  return d;
}

TEST(Attention, ForwardMatchesNaiveReference) {
  CpuBackend be(2);
  // T = 150 spans three causal query blocks of the CPU kernel (64 + 64 + 22).
  for (const AttnDims& d : {dims(2, 13, 4, 2, 6), dims(1, 5, 3, 3, 10), dims(3, 1, 2, 1, 4),
                            dims(1, 9, 4, 1, 8), dims(2, 150, 4, 2, 8)}) {
    SCOPED_TRACE(::testing::Message() << "B " << d.batch << " T " << d.seq << " H " << d.heads
                                      << " KV " << d.kv_heads << " hd " << d.head_dim);
    Qkv in = random_qkv(d, 100 + d.seq);
    std::vector<double> out, lse;
    attention_reference(in, d, out, lse);
    for (DType dt : {kF64, kF32}) {
      AttnTensors t = run_forward(be, in, d, dt);
      double tol = dt == kF64 ? 1e-12 : 2e-5;
      EXPECT_TRUE(all_close(to_host(be, t.out), out, tol, tol)) << dtype_name(dt);
      EXPECT_TRUE(all_close(to_host(be, t.lse), lse, tol, tol)) << dtype_name(dt);
    }
  }
}

TEST(Attention, BackwardMatchesFiniteDifferencesWithGqa) {
  CpuBackend be(2);
  const AttnDims d = dims(2, 5, 4, 2, 6);
  const int64_t rows = d.batch * d.seq;
  Qkv in = random_qkv(d, 200);
  RandomProjection proj(rows * d.heads * d.head_dim, 201);
  auto loss = [&] { return proj(to_host(be, run_forward(be, in, d, kF64).out)); };
  AttnTensors t = run_forward(be, in, d, kF64);
  Tensor dq = poisoned(be, t.q.shape(), kF64), dk = poisoned(be, t.k.shape(), kF64);
  Tensor dv = poisoned(be, t.v.shape(), kF64);
  be.attention_backward(dq, dk, dv, to_tensor(be, proj.r, t.out.shape(), kF64), t.q, t.k, t.v,
                        t.out, t.lse, d);
  expect_gradient_matches(loss, in.q, to_host(be, dq), "attention dq");
  expect_gradient_matches(loss, in.k, to_host(be, dk), "attention dk");
  expect_gradient_matches(loss, in.v, to_host(be, dv), "attention dv");
}

// T = 70 crosses a causal query block boundary (64) of the CPU kernel.
TEST(Attention, BackwardMatchesFiniteDifferencesLongerSequence) {
  CpuBackend be(1);
  const AttnDims d = dims(1, 70, 2, 1, 10);
  Qkv in = random_qkv(d, 300);
  RandomProjection proj(d.seq * d.heads * d.head_dim, 301);
  auto loss = [&] { return proj(to_host(be, run_forward(be, in, d, kF64).out)); };
  AttnTensors t = run_forward(be, in, d, kF64);
  Tensor dq = poisoned(be, t.q.shape(), kF64), dk = poisoned(be, t.k.shape(), kF64);
  Tensor dv = poisoned(be, t.v.shape(), kF64);
  be.attention_backward(dq, dk, dv, to_tensor(be, proj.r, t.out.shape(), kF64), t.q, t.k, t.v,
                        t.out, t.lse, d);
  expect_gradient_matches(loss, in.q, to_host(be, dq), "attention dq");
  expect_gradient_matches(loss, in.k, to_host(be, dk), "attention dk");
  expect_gradient_matches(loss, in.v, to_host(be, dv), "attention dv");
}

TEST(Attention, IsIndependentOfThreadCount) {
  const AttnDims d = dims(3, 100, 4, 2, 16);
  Qkv in = random_qkv(d, 400);
  std::vector<double> dout = random_normal(d.batch * d.seq * d.heads * d.head_dim, 401);
  std::vector<std::vector<double>> results[5];
  for (int threads : {1, 2}) {
    CpuBackend be(threads);
    AttnTensors t = run_forward(be, in, d, kF32);
    Tensor dq = be.empty(t.q.shape(), kF32), dk = be.empty(t.k.shape(), kF32);
    Tensor dv = be.empty(t.v.shape(), kF32);
    be.attention_backward(dq, dk, dv, to_tensor(be, dout, t.out.shape(), kF32), t.q, t.k, t.v,
                          t.out, t.lse, d);
    int i = 0;
    for (const Tensor* x : {&t.out, &t.lse, &dq, &dk, &dv}) results[i++].push_back(to_host(be, *x));
  }
  for (auto& r : results) EXPECT_TRUE(test::bitwise_equal(r[0], r[1]));
}

TEST(Attention, RejectsBadDims) {
  CpuBackend be(1);
  const AttnDims bad_group = dims(1, 4, 3, 2, 4);
  Qkv in = random_qkv(bad_group, 500);
  EXPECT_THROW(run_forward(be, in, bad_group, kF32), Error);
  const AttnDims d = dims(1, 4, 2, 1, 4);
  AttnTensors t = run_forward(be, random_qkv(d, 501), d, kF32);
  Tensor wrong_lse = be.empty({1, 2, 5}, kF32);
  EXPECT_THROW(be.attention_forward(t.out, wrong_lse, t.q, t.k, t.v, d), Error);
}

}  // namespace
}  // namespace moe
