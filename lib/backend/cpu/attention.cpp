// CpuBackend causal attention with grouped-query heads: query head h reads kv head
// h / (H / KV); scores are q k^T / sqrt(hd) with the causal mask j <= i.
//
// Forward, per (batch, head): S = scale * Q K^T (one GEMM on strided views of q and k), a
// row-wise softmax over j <= i that saves lse_i = log sum_j exp(S_ij), then O = P V (a second
// GEMM). Backward recomputes P = exp(S - lse) and, with D_i = sum_c dO_ic O_ic:
//   dV += P^T dO,  dP = dO V^T,  dS = P (dP - D),  dQ = scale dS K,  dK += scale dS^T Q.
// dK and dV of a kv head collect the contributions of all its query heads, so the backward pass
// is parallel over (batch, kv head) and loops over the group's query heads in order: no two
// threads write the same memory and the sums have a fixed order.
//
// Parallelism is over (batch, head) pairs with single-threaded BLAS inside. Every pair's numbers come from the same single-threaded GEMMs
// whatever the thread count. The T x T score and probability blocks live in thread_local
// scratch vectors reused across calls: they only allocate when T grows.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

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
      : B(d.batch), T(d.seq), H(d.heads), KV(d.kv_heads), hd(d.head_dim), q_stride(d.heads * d.head_dim),
        kv_stride(d.kv_heads * d.head_dim), group(d.heads / d.kv_heads) {}
  int64_t q_off(int64_t b, int64_t h) const { return b * T * q_stride + h * hd; }
  int64_t kv_off(int64_t b, int64_t g) const { return b * T * kv_stride + g * hd; }
};

template <typename T> std::vector<T>& scratch(int slot, size_t n) {
  thread_local std::vector<T> buffers[2];
  if (buffers[slot].size() < n) buffers[slot].resize(n);
  return buffers[slot];
}

// S = scale * Q K^T for one head (full T x T; the upper triangle is masked afterwards).
template <typename Scalar>
void scores(Scalar* s, const Scalar* q, const Scalar* k, const Layout& L, double scale) {
  gemm(CblasNoTrans, CblasTrans, L.T, L.T, L.hd, scale, q, L.q_stride, k, L.kv_stride, 0.0, s,
       L.T);
}

template <typename Scalar>
void attention_forward_head(Scalar* out, Scalar* lse, const Scalar* q, const Scalar* k,
                            const Scalar* v, const Layout& L, double scale) {
  const int64_t T = L.T;
  Scalar* s = scratch<Scalar>(0, size_t(T * T)).data();
  scores(s, q, k, L, scale);
  for (int64_t i = 0; i < T; ++i) {
    Scalar* row = s + i * T;
    Scalar mx = row[0];
    for (int64_t j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
    double sum = 0.0;
    for (int64_t j = 0; j <= i; ++j) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    const Scalar inv = Scalar(1.0 / sum);
    for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
    std::fill(row + i + 1, row + T, Scalar(0));
    lse[i] = Scalar(double(mx) + std::log(sum));
  }
  gemm(CblasNoTrans, CblasNoTrans, T, L.hd, T, 1.0, s, T, v, L.kv_stride, 0.0, out, L.q_stride);
}

// Adds the contributions of one query head to dk and dv, and writes its dq.
template <typename Scalar>
void attention_backward_head(Scalar* dq, Scalar* dk, Scalar* dv, const Scalar* dout,
                             const Scalar* q, const Scalar* k, const Scalar* v,
                             const Scalar* out, const Scalar* lse, const Layout& L,
                             double scale) {
  const int64_t T = L.T, hd = L.hd;
  Scalar* p = scratch<Scalar>(0, size_t(T * T)).data();
  Scalar* dp = scratch<Scalar>(1, size_t(T * T)).data();
  scores(p, q, k, L, scale);
  for (int64_t i = 0; i < T; ++i) {
    Scalar* row = p + i * T;
    for (int64_t j = 0; j <= i; ++j) row[j] = std::exp(row[j] - lse[i]);
    std::fill(row + i + 1, row + T, Scalar(0));
  }
  // dV += P^T dO
  gemm(CblasTrans, CblasNoTrans, T, hd, T, 1.0, p, T, dout, L.q_stride, 1.0, dv, L.kv_stride);
  // dP = dO V^T
  gemm(CblasNoTrans, CblasTrans, T, T, hd, 1.0, dout, L.q_stride, v, L.kv_stride, 0.0, dp, T);
  // dS = P (dP - D), written over dp
  for (int64_t i = 0; i < T; ++i) {
    const Scalar* o = out + i * L.q_stride;
    const Scalar* d = dout + i * L.q_stride;
    double di = 0.0;
    for (int64_t c = 0; c < hd; ++c) di += double(o[c]) * d[c];
    const Scalar D = Scalar(di);
    Scalar* ds = dp + i * T;
    const Scalar* pr = p + i * T;
    for (int64_t j = 0; j <= i; ++j) ds[j] = pr[j] * (ds[j] - D);
    std::fill(ds + i + 1, ds + T, Scalar(0));
  }
  // dQ = scale dS K (overwrites), dK += scale dS^T Q
  gemm(CblasNoTrans, CblasNoTrans, T, hd, T, scale, dp, T, k, L.kv_stride, 0.0, dq, L.q_stride);
  gemm(CblasTrans, CblasNoTrans, T, hd, T, scale, dp, T, q, L.q_stride, 1.0, dk, L.kv_stride);
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
  cpu::dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* po = out.ptr<T>();
    T* pl = lse.ptr<T>();
    const T* pq = q.ptr<T>();
    const T* pk = k.ptr<T>();
    const T* pv = v.ptr<T>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(cpu::team(threads_, L.B * L.H * L.T * L.T * L.hd))
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
#pragma omp parallel for schedule(dynamic, 1) num_threads(cpu::team(threads_, L.B * L.H * L.T * L.T * L.hd))
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

}  // namespace moe
