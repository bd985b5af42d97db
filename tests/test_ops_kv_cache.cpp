// CpuBackend ops of the incremental eval forward over a KV cache (forward only, no backward):
// rope_forward_offset against the textbook formula at shifted positions and against
// rope_forward on the longer sequence (bitwise: same angles); attention_forward_cached against a
// naive reference written here (several rows with different prefix lengths, two rows sharing one
// cached prefix, a prefix crossing the 64-query block, 1 and several new tokens) and against
// attention_forward on the concatenated sequence; overwrite semantics (NaN-poisoned outputs),
// thread-count independence and clear errors for bad spans and offsets.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "support/gradcheck.h"

namespace moe {
namespace {

using test::all_close;
using test::poisoned;
using test::random_normal;
using test::to_host;
using test::to_tensor;
using test::to_tensor_i32;

constexpr DType kF64 = DType::kF64;
constexpr DType kF32 = DType::kF32;

AttnDims dims(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hd) {
  AttnDims d;
  d.batch = B;
  d.seq = T;
  d.heads = H;
  d.kv_heads = KV;
  d.head_dim = hd;
  return d;
}

// ---- rope_forward_offset -------------------------------------------------------------------

// Hugging Face Llama rotate_half RoPE of one [rows, H*hd] block at positions pos[row].
std::vector<double> rope_at(const std::vector<double>& x, const std::vector<int64_t>& pos,
                            int64_t H, int64_t hd, double theta) {
  std::vector<double> y(x.size());
  const int64_t half = hd / 2;
  for (size_t r = 0; r < pos.size(); ++r)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < hd; ++i) {
        const double* xh = &x[(r * H + h) * hd];
        const double angle = pos[r] / std::pow(theta, double(2 * (i % half)) / hd);
        const double rotated = i < half ? -xh[i + half] : xh[i - half];
        y[(r * H + h) * hd + i] = xh[i] * std::cos(angle) + rotated * std::sin(angle);
      }
  return y;
}

TEST(RopeOffset, RotatesEachSequenceFromItsOffset) {
  CpuBackend be(2);
  const int64_t B = 3, T = 4, H = 2, hd = 6;
  const float theta = 10000.0f;
  const std::vector<int32_t> offsets = {0, 7, 130};
  std::vector<int64_t> pos;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) pos.push_back(offsets[b] + t);
  const std::vector<double> x = random_normal(B * T * H * hd, 10);
  const std::vector<double> want = rope_at(x, pos, H, hd, theta);
  const Tensor off = to_tensor_i32(be, offsets, {B});
  for (DType dt : {kF64, kF32}) {
    Tensor y = poisoned(be, {B * T, H * hd}, dt);
    be.rope_forward_offset(y, to_tensor(be, x, {B * T, H * hd}, dt), off, B, T, H, hd, theta);
    const double tol = dt == kF64 ? 1e-12 : 3e-6;
    EXPECT_TRUE(all_close(to_host(be, y), want, tol, tol)) << dtype_name(dt);
  }
  // In place (y aliases x).
  Tensor t = to_tensor(be, x, {B * T, H * hd}, kF64);
  be.rope_forward_offset(t, t, off, B, T, H, hd, theta);
  EXPECT_TRUE(all_close(to_host(be, t), want, 1e-12, 1e-12));
}

TEST(RopeOffset, EqualsRopeForwardOnTheLongerSequenceBitwise) {
  CpuBackend be(1);
  const int64_t P = 9, T = 5, H = 3, hd = 8;
  const float theta = 500.0f;
  const std::vector<double> x = random_normal((P + T) * H * hd, 20);
  for (DType dt : {kF64, kF32}) {
    Tensor full = to_tensor(be, x, {P + T, H * hd}, dt);
    be.rope_forward(full, full, 1, P + T, H, hd, theta);
    const std::vector<double> tail(x.begin() + P * H * hd, x.end());
    Tensor y = poisoned(be, {T, H * hd}, dt);
    be.rope_forward_offset(y, to_tensor(be, tail, {T, H * hd}, dt),
                           to_tensor_i32(be, {static_cast<int32_t>(P)}, {1}), 1, T, H, hd, theta);
    const std::vector<double> all = to_host(be, full);
    EXPECT_TRUE(test::bitwise_equal(to_host(be, y),
                                    std::vector<double>(all.begin() + P * H * hd, all.end())))
        << dtype_name(dt);
  }
}

TEST(RopeOffset, RejectsNegativeOffsetsAndWrongShapes) {
  CpuBackend be(1);
  Tensor x = be.zeros({8, 12}, kF32);
  EXPECT_THROW(be.rope_forward_offset(x, x, to_tensor_i32(be, {0, -1}, {2}), 2, 4, 2, 6, 1e4f),
               Error);
  EXPECT_THROW(be.rope_forward_offset(x, x, to_tensor_i32(be, {0, 1, 2}, {3}), 2, 4, 2, 6, 1e4f),
               Error);
  EXPECT_THROW(be.rope_forward_offset(x, x, be.zeros({2}, kF32), 2, 4, 2, 6, 1e4f), Error);
  EXPECT_THROW(be.rope_forward_offset(x, x, Tensor(), 2, 4, 2, 6, 1e4f), Error);
}

// ---- attention_forward_cached --------------------------------------------------------------

// A cached-attention problem: new q/k/v of B rows x T tokens, a cache of C rows, and each row's
// span (start, len) in the cache.
struct CachedCase {
  AttnDims d;
  int64_t C = 0;
  std::vector<int32_t> start, len;
  std::vector<double> q, k, v, kc, vc;
};

CachedCase make_case(const AttnDims& d, int64_t C, std::vector<int32_t> start,
                     std::vector<int32_t> len, uint64_t seed) {
  CachedCase c;
  c.d = d;
  c.C = C;
  c.start = std::move(start);
  c.len = std::move(len);
  const int64_t rows = d.batch * d.seq, qw = d.heads * d.head_dim, kvw = d.kv_heads * d.head_dim;
  c.q = random_normal(rows * qw, seed);
  c.k = random_normal(rows * kvw, seed + 1);
  c.v = random_normal(rows * kvw, seed + 2);
  c.kc = random_normal(C * kvw, seed + 3);
  c.vc = random_normal(C * kvw, seed + 4);
  return c;
}

// The textbook computation: row b's keys are its cache span followed by its new keys; new query
// t sees the span and new keys t' <= t.
std::vector<double> cached_reference(const CachedCase& c) {
  const AttnDims& d = c.d;
  const int64_t T = d.seq, H = d.heads, KV = d.kv_heads, hd = d.head_dim;
  std::vector<double> out(d.batch * T * H * hd, 0.0);
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV), P = c.len[b];
      auto row = [&](const std::vector<double>& cache, const std::vector<double>& fresh,
                     int64_t j) {
        return j < P ? &cache[((c.start[b] + j) * KV + g) * hd]
                     : &fresh[((b * T + j - P) * KV + g) * hd];
      };
      auto key = [&](int64_t j) { return row(c.kc, c.k, j); };
      auto value = [&](int64_t j) { return row(c.vc, c.v, j); };
      for (int64_t t = 0; t < T; ++t) {
        const double* qv = &c.q[((b * T + t) * H + h) * hd];
        std::vector<double> s(P + t + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= P + t; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < hd; ++e) dot += qv[e] * key(j)[e];
          s[j] = dot / std::sqrt(double(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double x : s) sum += std::exp(x - mx);
        for (int64_t j = 0; j <= P + t; ++j)
          for (int64_t e = 0; e < hd; ++e)
            out[((b * T + t) * H + h) * hd + e] += std::exp(s[j] - mx) / sum * value(j)[e];
      }
    }
  return out;
}

std::vector<double> run_cached(Backend& be, const CachedCase& c, DType dt) {
  const AttnDims& d = c.d;
  const int64_t rows = d.batch * d.seq, qw = d.heads * d.head_dim, kvw = d.kv_heads * d.head_dim;
  Tensor out = poisoned(be, {rows, qw}, dt);
  be.attention_forward_cached(out, to_tensor(be, c.q, {rows, qw}, dt),
                              to_tensor(be, c.k, {rows, kvw}, dt),
                              to_tensor(be, c.v, {rows, kvw}, dt),
                              to_tensor(be, c.kc, {c.C, kvw}, dt),
                              to_tensor(be, c.vc, {c.C, kvw}, dt),
                              to_tensor_i32(be, c.start, {d.batch}),
                              to_tensor_i32(be, c.len, {d.batch}), d);
  return to_host(be, out);
}

TEST(AttentionCached, MatchesNaiveReference) {
  CpuBackend be(2);
  // Rows 0 and 2 share one cached prefix (the choices of one question); row 1 has none (plain
  // causal attention); row 3's prefix of 70 crosses the 64-query block.
  const std::vector<int32_t> start = {0, 0, 0, 11}, len = {11, 0, 7, 70};
  for (const AttnDims& d : {dims(4, 1, 4, 2, 6), dims(4, 5, 4, 2, 6), dims(4, 67, 3, 1, 8),
                            dims(4, 3, 2, 2, 4)}) {
    SCOPED_TRACE(::testing::Message() << "T " << d.seq << " H " << d.heads << " KV "
                                      << d.kv_heads << " hd " << d.head_dim);
    const CachedCase c = make_case(d, 90, start, len, 100 + d.seq);
    const std::vector<double> want = cached_reference(c);
    EXPECT_TRUE(all_close(run_cached(be, c, kF64), want, 1e-12, 1e-12)) << "f64";
    EXPECT_TRUE(all_close(run_cached(be, c, kF32), want, 2e-5, 2e-5)) << "f32";
  }
}

// New tokens over a cached prefix give what attention_forward gives at the same positions of the
// concatenated sequence.
TEST(AttentionCached, EqualsFullCausalAttentionOnTheConcatenation) {
  CpuBackend be(2);
  for (int64_t P : {1, 30, 100}) {
    for (int64_t T : {1, 9}) {
      const AttnDims full = dims(1, P + T, 4, 2, 8), part = dims(1, T, 4, 2, 8);
      const int64_t qw = 32, kvw = 16;
      const std::vector<double> q = random_normal((P + T) * qw, 7 * P + T);
      const std::vector<double> k = random_normal((P + T) * kvw, 7 * P + T + 1);
      const std::vector<double> v = random_normal((P + T) * kvw, 7 * P + T + 2);
      for (DType dt : {kF64, kF32}) {
        Tensor out = be.empty({P + T, qw}, dt), lse = be.empty({1, 4, P + T}, dt);
        be.attention_forward(out, lse, to_tensor(be, q, {P + T, qw}, dt),
                             to_tensor(be, k, {P + T, kvw}, dt),
                             to_tensor(be, v, {P + T, kvw}, dt), full);
        const std::vector<double> all = to_host(be, out);
        CachedCase c;
        c.d = part;
        c.C = P;
        c.start = {0};
        c.len = {static_cast<int32_t>(P)};
        c.q.assign(q.begin() + P * qw, q.end());
        c.k.assign(k.begin() + P * kvw, k.end());
        c.v.assign(v.begin() + P * kvw, v.end());
        c.kc.assign(k.begin(), k.begin() + P * kvw);
        c.vc.assign(v.begin(), v.begin() + P * kvw);
        const double tol = dt == kF64 ? 1e-12 : 1e-5;
        EXPECT_TRUE(all_close(run_cached(be, c, dt),
                              std::vector<double>(all.begin() + P * qw, all.end()), tol, tol))
            << "P " << P << " T " << T << " " << dtype_name(dt);
      }
    }
  }
}

TEST(AttentionCached, IsIndependentOfThreadCount) {
  const CachedCase c = make_case(dims(3, 20, 4, 2, 16), 200, {0, 50, 50}, {50, 100, 0}, 300);
  CpuBackend one(1), two(2);
  EXPECT_TRUE(test::bitwise_equal(run_cached(one, c, kF32), run_cached(two, c, kF32)));
}

TEST(AttentionCached, RejectsSpansOutsideTheCacheAndBadShapes) {
  CpuBackend be(1);
  const AttnDims d = dims(2, 3, 2, 1, 4);
  for (const auto& [start, len] :
       std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>>{
           {{0, 8}, {5, 3}},    // 8 + 3 > 10 rows
           {{-1, 0}, {2, 2}},   // negative start
           {{0, 0}, {2, -2}}}) {  // negative length
    CachedCase c = make_case(d, 10, start, len, 400);
    EXPECT_THROW(run_cached(be, c, kF32), Error);
  }
  CachedCase ok = make_case(d, 10, {0, 1}, {2, 9}, 401);
  EXPECT_NO_THROW(run_cached(be, ok, kF32));
  Tensor out = be.empty({6, 8}, kF32), q = be.zeros({6, 8}, kF32), k = be.zeros({6, 4}, kF32);
  Tensor cache = be.zeros({10, 4}, kF32), wrong_cache = be.zeros({10, 5}, kF32);
  Tensor start = to_tensor_i32(be, {0, 0}, {2}), len = to_tensor_i32(be, {1, 1}, {2});
  EXPECT_THROW(be.attention_forward_cached(out, q, k, k, wrong_cache, wrong_cache, start, len, d),
               Error);
  EXPECT_THROW(be.attention_forward_cached(out, q, k, k, cache, cache, to_tensor_i32(be, {0}, {1}),
                                           len, d),
               Error);
  EXPECT_THROW(be.attention_forward_cached(out, q, k, k, cache, be.zeros({10, 4}, kF64), start,
                                           len, d),
               Error);
}

// AttnDims::cache_len_max is a promise of the caller (lib/model passes the longest prefix of the
// pass; the cuDNN path sizes its gathered keys by it): a prefix above it is an error.
TEST(AttentionCached, RejectsPrefixesAboveTheCallersBound) {
  CpuBackend be(1);
  const AttnDims d = dims(2, 3, 2, 1, 4);
  CachedCase c = make_case(d, 10, {0, 1}, {2, 9}, 402);
  c.d.cache_len_max = 9;
  EXPECT_NO_THROW(run_cached(be, c, kF32));
  c.d.cache_len_max = 8;
  EXPECT_THROW(run_cached(be, c, kF32), Error);
}

}  // namespace
}  // namespace moe
