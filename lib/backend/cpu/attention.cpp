// CpuBackend causal attention with grouped-query heads: query head h reads kv head
// h / (H / KV); scores are q k^T / sqrt(hd) with the causal mask j <= i.
//
// Forward, per (batch, head) and block of queries: S = scale * Q K^T (one GEMM on strided views
// of q and k, only over the keys the block can see), a row-wise softmax over j <= i that saves
// lse_i = log sum_j exp(S_ij), then O = P V (a second GEMM). Backward recomputes
// P = exp(S - lse) and, with D_i = sum_c dO_ic O_ic:
//   dV += P^T dO,  dP = dO V^T,  dS = P (dP - D),  dQ = scale dS K,  dK += scale dS^T Q.
// dK and dV of a kv head collect the contributions of all its query heads, so the backward pass
// is parallel over (batch, kv head) and loops over the group's query heads in order: no two
// threads write the same memory and the sums have a fixed order.
//
// attention_forward_cached (eval, the incremental forward over a KV cache): the same blocked
// forward for new tokens that continue a cached prefix of P keys; a block's score slab is
// [rows, P + i1], the prefix columns from one GEMM against the cache rows, the new columns from a
// second GEMM against the new keys, then the same softmax, then O = P_prefix Vc + P_new V.
//
// The forward pass is parallel over (batch, head) pairs, with single-threaded BLAS inside: every
// pair's numbers come from the same GEMMs whatever the thread count. The score and probability
// slabs live in thread_local scratch vectors reused across calls (they allocate only when T
// grows).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"
#include "backend/cpu/vec_exp.h"

namespace moe {
namespace {

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, double alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, double beta, float* c,
          int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), float(alpha), a, int(lda), b,
              int(ldb), float(beta), c, int(ldc));
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, double alpha,
          const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
          int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb),
              beta, c, int(ldc));
}

// Strided views of one (batch, head) of q/k/v/out laid out [B*T, heads*hd].
struct Layout {
  int64_t B, T, H, KV, hd, q_stride, kv_stride, group;
  explicit Layout(const AttnDims& d)
      : B(d.batch), T(d.seq), H(d.heads), KV(d.kv_heads), hd(d.head_dim),
        q_stride(d.heads * d.head_dim), kv_stride(d.kv_heads * d.head_dim),
        group(d.heads / d.kv_heads) {}
  int64_t q_off(int64_t b, int64_t h) const { return b * T * q_stride + h * hd; }
  int64_t kv_off(int64_t b, int64_t g) const { return b * T * kv_stride + g * hd; }
};

template <typename T> std::vector<T>& scratch(int slot, size_t n) {
  thread_local std::vector<T> buffers[2];
  if (buffers[slot].size() < n) buffers[slot].resize(n);
  return buffers[slot];
}

// Causal blocking: queries [i0, i1) only see keys [0, i1), so each block of kQueryBlock queries
// computes a [i1 - i0, i1] slab of scores instead of the full T x T square (for T = 128 that is
// 75% of the work, for T = 1024 about 53%), and scratch is bounded by kQueryBlock x T.
constexpr int64_t kQueryBlock = 64;

// S[r, j] = scale * q_{i0+r} . k_j for r < i1 - i0, j < i1 (row stride i1).
template <typename Scalar>
void block_scores(Scalar* s, const Scalar* q, const Scalar* k, const Layout& L, int64_t i0,
                  int64_t i1, double scale) {
  gemm(CblasNoTrans, CblasTrans, i1 - i0, i1, L.hd, scale, q + i0 * L.q_stride, L.q_stride, k,
       L.kv_stride, 0.0, s, i1);
}

// Row softmax over the first n entries of a score row of `width`, zero after; returns the lse.
template <typename Scalar> Scalar softmax_row(Scalar* row, int64_t n, int64_t width) {
  Scalar mx = row[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, row[j]);
  for (int64_t j = 0; j < n; ++j) row[j] -= mx;
  cpu::exp_array(row, row, n);
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) sum += row[j];
  const Scalar inv = Scalar(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  std::fill(row + n, row + width, Scalar(0));
  return Scalar(double(mx) + std::log(sum));
}

template <typename Scalar>
void attention_forward_head(Scalar* out, Scalar* lse, const Scalar* q, const Scalar* k,
                            const Scalar* v, const Layout& L, double scale) {
  Scalar* s = scratch<Scalar>(0, size_t(std::min(L.T, kQueryBlock) * L.T)).data();
  for (int64_t i0 = 0; i0 < L.T; i0 += kQueryBlock) {
    const int64_t i1 = std::min(L.T, i0 + kQueryBlock), width = i1;
    block_scores(s, q, k, L, i0, i1, scale);
    for (int64_t i = i0; i < i1; ++i) {  // row i sees keys j <= i
      lse[i] = softmax_row(s + (i - i0) * width, i + 1, width);
    }
    // out[i0:i1] = P V[0:i1]
    gemm(CblasNoTrans, CblasNoTrans, i1 - i0, L.hd, i1, 1.0, s, width, v, L.kv_stride, 0.0,
         out + i0 * L.q_stride, L.q_stride);
  }
}

// One (batch, head) of attention_forward_cached: new queries t at positions P + t over the P
// prefix keys kc / vc (row stride kv_stride) and the new keys k / v (causal).
template <typename Scalar>
void attention_cached_head(Scalar* out, const Scalar* q, const Scalar* k, const Scalar* v,
                           const Scalar* kc, const Scalar* vc, int64_t P, const Layout& L,
                           double scale) {
  const int64_t qs = L.q_stride, ks = L.kv_stride;
  Scalar* s = scratch<Scalar>(0, size_t(std::min(L.T, kQueryBlock) * (P + L.T))).data();
  for (int64_t i0 = 0; i0 < L.T; i0 += kQueryBlock) {
    const int64_t i1 = std::min(L.T, i0 + kQueryBlock), rows = i1 - i0, width = P + i1;
    if (P > 0) {
      gemm(CblasNoTrans, CblasTrans, rows, P, L.hd, scale, q + i0 * qs, qs, kc, ks, 0.0, s, width);
    }
    gemm(CblasNoTrans, CblasTrans, rows, i1, L.hd, scale, q + i0 * qs, qs, k, ks, 0.0, s + P,
         width);
    for (int64_t i = i0; i < i1; ++i) softmax_row(s + (i - i0) * width, P + i + 1, width);
    if (P > 0) {
      gemm(CblasNoTrans, CblasNoTrans, rows, L.hd, P, 1.0, s, width, vc, ks, 0.0, out + i0 * qs,
           qs);
    }
    gemm(CblasNoTrans, CblasNoTrans, rows, L.hd, i1, 1.0, s + P, width, v, ks, P > 0 ? 1.0 : 0.0,
         out + i0 * qs, qs);
  }
}

// Adds the contributions of one query head to dk and dv, and writes its dq.
template <typename Scalar>
void attention_backward_head(Scalar* dq, Scalar* dk, Scalar* dv, const Scalar* dout,
                             const Scalar* q, const Scalar* k, const Scalar* v,
                             const Scalar* out, const Scalar* lse, const Layout& L,
                             double scale) {
  const int64_t hd = L.hd, qs = L.q_stride, ks = L.kv_stride;
  const size_t slab = size_t(std::min(L.T, kQueryBlock) * L.T);
  Scalar* p = scratch<Scalar>(0, slab).data();
  Scalar* dp = scratch<Scalar>(1, slab).data();
  for (int64_t i0 = 0; i0 < L.T; i0 += kQueryBlock) {
    const int64_t i1 = std::min(L.T, i0 + kQueryBlock), rows = i1 - i0, width = i1;
    block_scores(p, q, k, L, i0, i1, scale);
    for (int64_t i = i0; i < i1; ++i) {  // P = exp(S - lse), masked
      Scalar* row = p + (i - i0) * width;
      for (int64_t j = 0; j <= i; ++j) row[j] -= lse[i];
      cpu::exp_array(row, row, i + 1);
      std::fill(row + i + 1, row + width, Scalar(0));
    }
    const Scalar* dout_blk = dout + i0 * qs;
    // dV[0:i1] += P^T dO[i0:i1];  dP = dO[i0:i1] V[0:i1]^T
    gemm(CblasTrans, CblasNoTrans, width, hd, rows, 1.0, p, width, dout_blk, qs, 1.0, dv, ks);
    gemm(CblasNoTrans, CblasTrans, rows, width, hd, 1.0, dout_blk, qs, v, ks, 0.0, dp, width);
    for (int64_t i = i0; i < i1; ++i) {  // dS = P (dP - D_i), D_i = dO_i . O_i, over dp
      const Scalar* o = out + i * qs;
      const Scalar* d = dout + i * qs;
      double di = 0.0;
      for (int64_t c = 0; c < hd; ++c) di += double(o[c]) * d[c];
      const Scalar D = Scalar(di);
      Scalar* ds = dp + (i - i0) * width;
      const Scalar* pr = p + (i - i0) * width;
      for (int64_t j = 0; j <= i; ++j) ds[j] = pr[j] * (ds[j] - D);
      std::fill(ds + i + 1, ds + width, Scalar(0));
    }
    // dQ[i0:i1] = scale dS K[0:i1] (overwrites);  dK[0:i1] += scale dS^T Q[i0:i1]
    gemm(CblasNoTrans, CblasNoTrans, rows, hd, width, scale, dp, width, k, ks, 0.0, dq + i0 * qs,
         qs);
    gemm(CblasTrans, CblasNoTrans, width, hd, rows, scale, dp, width, q + i0 * qs, qs, 1.0, dk,
         ks);
  }
}

void check_attention(const Tensor& q, const AttnDims& d, const char* op,
                     std::initializer_list<std::pair<const Tensor*, const char*>> q_like,
                     std::initializer_list<std::pair<const Tensor*, const char*>> kv_like,
                     std::initializer_list<std::pair<const Tensor*, const char*>> lse_like) {
  MOE_CHECK(d.batch >= 0 && d.seq > 0 && d.heads > 0 && d.kv_heads > 0 && d.head_dim > 0,
            "{}: expected positive dims, found batch {}, seq {}, heads {}, kv_heads {}, "
            "head_dim {}", op, d.batch, d.seq, d.heads, d.kv_heads, d.head_dim);
  MOE_CHECK(d.heads % d.kv_heads == 0, "{}: heads ({}) must be a multiple of kv_heads ({})", op,
            d.heads, d.kv_heads);
  cpu::check_cpu(q, op, "q");
  const int64_t rows = d.batch * d.seq;
  for (auto [t, name] : q_like) {
    cpu::check_dtype(*t, q.dtype(), op, name);
    cpu::check_shape_of(*t, {rows, d.heads * d.head_dim}, op, name);
  }
  for (auto [t, name] : kv_like) {
    cpu::check_dtype(*t, q.dtype(), op, name);
    cpu::check_shape_of(*t, {rows, d.kv_heads * d.head_dim}, op, name);
  }
  for (auto [t, name] : lse_like) {
    cpu::check_dtype(*t, q.dtype(), op, name);
    cpu::check_shape_of(*t, {d.batch, d.heads, d.seq}, op, name);
  }
}

}  // namespace

void CpuBackend::attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const AttnDims& dims) {
  const char* op = "attention_forward";
  check_attention(q, dims, op, {{&q, "q"}, {&out, "out"}}, {{&k, "k"}, {&v, "v"}},
                  {{&lse, "lse"}});
  const Layout L(dims);
  const double scale = 1.0 / std::sqrt(double(L.hd));
  const int team = cpu::team(threads_, L.B * L.H * L.T * L.T * L.hd);
  cpu::dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* po = out.ptr<T>();
    T* pl = lse.ptr<T>();
    const T* pq = q.ptr<T>();
    const T* pk = k.ptr<T>();
    const T* pv = v.ptr<T>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
    for (int64_t bh = 0; bh < L.B * L.H; ++bh) {
      const int64_t b = bh / L.H, h = bh % L.H, g = h / L.group;
      attention_forward_head(po + L.q_off(b, h), pl + bh * L.T, pq + L.q_off(b, h),
                             pk + L.kv_off(b, g), pv + L.kv_off(b, g), L, scale);
    }
  });
}

void CpuBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                    const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& out, const Tensor& lse,
                                    const AttnDims& dims) {
  const char* op = "attention_backward";
  check_attention(q, dims, op, {{&q, "q"}, {&dq, "dq"}, {&dout, "dout"}, {&out, "out"}},
                  {{&k, "k"}, {&v, "v"}, {&dk, "dk"}, {&dv, "dv"}}, {{&lse, "lse"}});
  const Layout L(dims);
  const double scale = 1.0 / std::sqrt(double(L.hd));
  const int team = cpu::team(threads_, L.B * L.H * L.T * L.T * L.hd);
  cpu::dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* pdq = dq.ptr<T>();
    T* pdk = dk.ptr<T>();
    T* pdv = dv.ptr<T>();
    const T* pdo = dout.ptr<T>();
    const T* pq = q.ptr<T>();
    const T* pk = k.ptr<T>();
    const T* pv = v.ptr<T>();
    const T* po = out.ptr<T>();
    const T* pl = lse.ptr<T>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
    for (int64_t bg = 0; bg < L.B * L.KV; ++bg) {
      const int64_t b = bg / L.KV, g = bg % L.KV;
      T* dk_bg = pdk + L.kv_off(b, g);
      T* dv_bg = pdv + L.kv_off(b, g);
      for (int64_t t = 0; t < L.T; ++t) {  // dk, dv are overwritten: clear this head's slice
        std::fill(dk_bg + t * L.kv_stride, dk_bg + t * L.kv_stride + L.hd, T(0));
        std::fill(dv_bg + t * L.kv_stride, dv_bg + t * L.kv_stride + L.hd, T(0));
      }
      for (int64_t h = g * L.group; h < (g + 1) * L.group; ++h) {
        attention_backward_head(pdq + L.q_off(b, h), dk_bg, dv_bg, pdo + L.q_off(b, h),
                                pq + L.q_off(b, h), pk + L.kv_off(b, g), pv + L.kv_off(b, g),
                                po + L.q_off(b, h), pl + (b * L.H + h) * L.T, L, scale);
      }
    }
  });
}

void CpuBackend::attention_forward_cached(Tensor& out, const Tensor& q, const Tensor& k,
                                          const Tensor& v, const Tensor& k_cache,
                                          const Tensor& v_cache, const Tensor& cache_start,
                                          const Tensor& cache_len, const AttnDims& dims) {
  const char* op = "attention_forward_cached";
  check_attention(q, dims, op, {{&q, "q"}, {&out, "out"}}, {{&k, "k"}, {&v, "v"}}, {});
  const int64_t kvw = dims.kv_heads * dims.head_dim;
  cpu::check_rank(k_cache, 2, op, "k_cache");
  const int64_t C = k_cache.dim(0);
  cpu::check_operand(k_cache, q.dtype(), {C, kvw}, op, "k_cache");
  cpu::check_operand(v_cache, q.dtype(), {C, kvw}, op, "v_cache");
  cpu::check_operand(cache_start, DType::kI32, {dims.batch}, op, "cache_start");
  cpu::check_operand(cache_len, DType::kI32, {dims.batch}, op, "cache_len");
  const int32_t* start = cache_start.ptr<int32_t>();
  const int32_t* len = cache_len.ptr<int32_t>();
  int64_t work = 0;
  for (int64_t b = 0; b < dims.batch; ++b) {
    MOE_CHECK(start[b] >= 0 && len[b] >= 0 && int64_t(start[b]) + len[b] <= C,
              "{}: row {} reads cache rows [{}, {} + {}) outside the {} cached rows", op, b,
              start[b], start[b], len[b], C);
    MOE_CHECK(dims.cache_len_max < 0 || len[b] <= dims.cache_len_max,
              "{}: row {} continues {} cached tokens, above the caller's bound cache_len_max {}",
              op, b, len[b], dims.cache_len_max);
    work += dims.heads * dims.seq * (len[b] + dims.seq) * dims.head_dim;
  }
  const Layout L(dims);
  const double scale = 1.0 / std::sqrt(double(L.hd));
  const int team = cpu::team(threads_, work);
  cpu::dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* po = out.ptr<T>();
    const T* pq = q.ptr<T>();
    const T* pk = k.ptr<T>();
    const T* pv = v.ptr<T>();
    const T* pkc = k_cache.ptr<T>();
    const T* pvc = v_cache.ptr<T>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
    for (int64_t bh = 0; bh < L.B * L.H; ++bh) {
      const int64_t b = bh / L.H, h = bh % L.H, g = h / L.group;
      const int64_t cache_off = int64_t(start[b]) * L.kv_stride + g * L.hd;
      attention_cached_head(po + L.q_off(b, h), pq + L.q_off(b, h), pk + L.kv_off(b, g),
                            pv + L.kv_off(b, g), pkc + cache_off, pvc + cache_off,
                            int64_t(len[b]), L, scale);
    }
  });
}

}  // namespace moe
