// Causal attention with GQA in the flash-attention style: scores are computed one tile of 32 keys
// at a time with an online softmax, so no T x T matrix ever exists (only a 32-wide tile of one
// query row lives in registers). The forward saves lse = m + log(l) per query row; the backward
// recomputes the probabilities from it.
//
// Layout: q, out [B*T, H*hd]; k, v [B*T, KV*hd]; lse [B, H, T] f32; query head h reads kv head
// h / (H / KV). Scores s = q.k / sqrt(hd), masked where key > query.
//
// attention_forward_cached (eval, the incremental forward over a KV cache) is the forward kernel
// with a second key source: row b's keys are its cached prefix (cache_len[b] rows of k_cache /
// v_cache from cache_start[b]) followed by its new keys, and new query t sits at key index
// cache_len[b] + t. A span outside the cache raises kErrCacheSpan and reads no prefix.
//
// Where cuDNN's fused SDPA serves an op instead (train.attention: cudnn or auto), and the
// cuDNN KV-cache forward: attention_cudnn.cu.
//
// Work split (fp32 arithmetic, bf16 or f32 storage; head_dim <= 128):
// - forward and dQ: one CTA per (16 query rows, batch*head); each warp owns 4 query rows; in a
//   key tile lane j scores key j, and lane l accumulates output dims l, l+32, ...
// - dK/dV: one CTA per (32 keys, batch*kv_head), looping over every query head of the group and
//   every query row at or after the first key, 8 rows at a time. Phase 1 (warp per query row,
//   lane per key) writes p and ds for the 8 x 32 block to shared memory; phase 2 (each thread owns
//   fixed (key, dim) elements) accumulates dK and dV over the 8 rows in order. Every gradient
//   element is therefore summed by one thread in a fixed order: deterministic, no atomics.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>

#include <spdlog/spdlog.h>

#include "cuda_backend.h"
#include "attention_spans.cuh"
#include "cudnn_attention.h"

namespace moe {
using namespace cuda;

namespace {

constexpr int kMaxHeadDim = 128;
constexpr int kDimsPerLane = kMaxHeadDim / 32;
constexpr int kQueriesPerCta = 16;
constexpr int kQueriesPerWarp = 4;
constexpr int kKeyTile = 32;
constexpr int kAttnThreads = 128;
constexpr int kBwdQueryChunk = 8;
constexpr int kBwdElems = kKeyTile * kMaxHeadDim / kAttnThreads;  // (key, dim) pairs per thread

struct AttnGeom {
  int batch, seq, heads, kv_heads, hd;
  float scale;
  __device__ int64_t q_index(int b, int t, int h) const {
    return (int64_t(b) * seq + t) * heads * hd + int64_t(h) * hd;
  }
  __device__ int64_t kv_index(int b, int t, int kvh) const {
    return (int64_t(b) * seq + t) * kv_heads * hd + int64_t(kvh) * hd;
  }
};

// Loads `rows` rows of a [*, hd] head slice into smem (row stride ld), zero past the sequence end.
template <typename T>
__device__ void load_rows(float* dst, int ld, const T* src, int64_t src_row_stride, int t0,
                          int rows, int seq, int hd) {
  for (int l = threadIdx.x; l < rows * hd; l += blockDim.x) {
    int r = l / hd, d = l % hd;
    int t = t0 + r;
    dst[r * ld + d] = t < seq ? to_f(src[int64_t(t) * src_row_stride + d]) : 0.0f;
  }
}

__device__ __forceinline__ float dot_smem(const float* a, const float* b, int hd) {
  float acc = 0.0f;
  for (int d = 0; d < hd; ++d) acc = fmaf(a[d], b[d], acc);
  return acc;
}

// Loads key rows key0 .. key0 + rows - 1 of a row whose keys are `prefix_len` rows of `prefix`
// followed by the rows of `fresh` (n_keys in all; zero past the end), both with row stride
// `stride`. With prefix_len = 0 these are just the row's own keys.
template <typename T>
__device__ void load_key_rows(float* dst, int ld, const T* prefix, const T* fresh,
                              int64_t stride, int key0, int rows, int prefix_len, int n_keys,
                              int hd) {
  for (int l = threadIdx.x; l < rows * hd; l += blockDim.x) {
    const int r = l / hd, d = l % hd, j = key0 + r;
    float x = 0.0f;
    if (j < prefix_len) {
      x = to_f(prefix[int64_t(j) * stride + d]);
    } else if (j < n_keys) {
      x = to_f(fresh[int64_t(j - prefix_len) * stride + d]);
    }
    dst[r * ld + d] = x;
  }
}

// The forward of one CTA (16 query rows of one (batch, head)) over the keys [prefix, new keys]:
// the row's `prefix` cached keys/values at kc/vc (none for training), then its own new keys
// kn/vn; new query qi sits at key index prefix + qi. Writes lse when lse is not null.
template <typename T>
__device__ __forceinline__ void attn_forward_cta(T* out, float* lse, const T* q, const T* kc,
                                                 const T* vc, const T* kn, const T* vn,
                                                 int prefix, const AttnGeom& g) {
  extern __shared__ float smem[];
  const int hd = g.hd, ldk = hd + 1;
  float* q_s = smem;                           // [16][hd]
  float* k_s = q_s + kQueriesPerCta * hd;      // [32][hd+1]
  float* v_s = k_s + kKeyTile * ldk;           // [32][hd+1]
  const int bh = blockIdx.y, b = bh / g.heads, h = bh % g.heads;
  const int q0 = blockIdx.x * kQueriesPerCta;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q_stride = int64_t(g.heads) * hd, kv_stride = int64_t(g.kv_heads) * hd;
  const int n_keys = prefix + g.seq;

  load_rows(q_s, hd, q + g.q_index(b, 0, h), q_stride, q0, kQueriesPerCta, g.seq, hd);
  float m[kQueriesPerWarp], l[kQueriesPerWarp], o[kQueriesPerWarp][kDimsPerLane];
  for (int u = 0; u < kQueriesPerWarp; ++u) {
    m[u] = -INFINITY;
    l[u] = 0.0f;
    for (int c = 0; c < kDimsPerLane; ++c) o[u][c] = 0.0f;
  }
  const int last_key = prefix + min(g.seq - 1, q0 + kQueriesPerCta - 1);
  for (int key0 = 0; key0 <= last_key; key0 += kKeyTile) {
    __syncthreads();  // previous tile fully consumed (and q_s loaded on the first pass)
    load_key_rows(k_s, ldk, kc, kn, kv_stride, key0, kKeyTile, prefix, n_keys, hd);
    load_key_rows(v_s, ldk, vc, vn, kv_stride, key0, kKeyTile, prefix, n_keys, hd);
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kQueriesPerWarp; ++u) {
      const int r = warp * kQueriesPerWarp + u, qi = q0 + r, last = prefix + qi;
      if (qi >= g.seq || key0 > last) continue;  // warp-uniform
      const bool valid = key0 + lane <= last;
      float s = valid ? g.scale * dot_smem(q_s + r * hd, k_s + lane * ldk, hd) : -INFINITY;
      const float m_new = fmaxf(m[u], warp_max(s));
      const float p = valid ? expf(s - m_new) : 0.0f;
      const float corr = expf(m[u] - m_new);
      l[u] = l[u] * corr + warp_sum(p);
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) o[u][c] *= corr;
      for (int j = 0; j < kKeyTile; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int c = 0; c < kDimsPerLane; ++c) {
          const int d = lane + 32 * c;
          if (d < hd) o[u][c] = fmaf(pj, v_s[j * ldk + d], o[u][c]);
        }
      }
      m[u] = m_new;
    }
  }
#pragma unroll
  for (int u = 0; u < kQueriesPerWarp; ++u) {
    const int qi = q0 + warp * kQueriesPerWarp + u;
    if (qi >= g.seq) continue;
    const float inv_l = 1.0f / l[u];
    T* orow = out + g.q_index(b, qi, h);
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) orow[d] = from_f<T>(o[u][c] * inv_l);
    }
    if (lse != nullptr && lane == 0) {
      lse[(int64_t(b) * g.heads + h) * g.seq + qi] = m[u] + logf(l[u]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttnThreads)
    attn_forward_kernel(T* out, float* lse, const T* q, const T* k, const T* v, AttnGeom g) {
  const int b = blockIdx.y / g.heads, h = blockIdx.y % g.heads;
  const int kvh = h / (g.heads / g.kv_heads);
  attn_forward_cta(out, lse, q, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                   k + g.kv_index(b, 0, kvh), v + g.kv_index(b, 0, kvh), /*prefix=*/0, g);
}

// The forward over [cached prefix, new keys]; g.seq is the number of new tokens per row.
template <typename T>
__global__ void __launch_bounds__(kAttnThreads)
    attn_cached_forward_kernel(T* out, const T* q, const T* k, const T* v, const T* k_cache,
                               const T* v_cache, CacheSpans spans, AttnGeom g, int* error_flag) {
  const int b = blockIdx.y / g.heads, h = blockIdx.y % g.heads;
  const int kvh = h / (g.heads / g.kv_heads);
  const int64_t kv_stride = int64_t(g.kv_heads) * g.hd;
  int start = spans.start[b], prefix = spans.len[b];
  if (start < 0 || prefix < 0 || int64_t(start) + prefix > spans.rows) {
    if (threadIdx.x == 0 && blockIdx.x == 0 && h == 0) {
      raise_device_error(error_flag, kErrCacheSpan);
    }
    start = 0;
    prefix = 0;
  }
  const int64_t cache_off = int64_t(start) * kv_stride + int64_t(kvh) * g.hd;
  attn_forward_cta(out, static_cast<float*>(nullptr), q, k_cache + cache_off, v_cache + cache_off,
                   k + g.kv_index(b, 0, kvh), v + g.kv_index(b, 0, kvh), prefix, g);
}

// D_i = dout_i . out_i for one query row, by one warp (fixed-order butterfly).
template <typename T>
__device__ float row_delta(const T* dout_row, const T* out_row, int hd) {
  float acc = 0.0f;
  for (int d = threadIdx.x % 32; d < hd; d += 32) acc += to_f(dout_row[d]) * to_f(out_row[d]);
  return warp_sum(acc);
}

template <typename T>
__global__ void __launch_bounds__(kAttnThreads)
    attn_dq_kernel(T* dq, const T* dout, const T* q, const T* k, const T* v, const T* out,
                   const float* lse, AttnGeom g) {
  extern __shared__ float smem[];
  const int hd = g.hd, ldk = hd + 1;
  float* q_s = smem;                          // [16][hd]
  float* do_s = q_s + kQueriesPerCta * hd;    // [16][hd]
  float* k_s = do_s + kQueriesPerCta * hd;    // [32][hd+1]
  float* v_s = k_s + kKeyTile * ldk;          // [32][hd+1]
  const int bh = blockIdx.y, b = bh / g.heads, h = bh % g.heads;
  const int kvh = h / (g.heads / g.kv_heads);
  const int q0 = blockIdx.x * kQueriesPerCta;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q_stride = int64_t(g.heads) * hd, kv_stride = int64_t(g.kv_heads) * hd;

  load_rows(q_s, hd, q + g.q_index(b, 0, h), q_stride, q0, kQueriesPerCta, g.seq, hd);
  load_rows(do_s, hd, dout + g.q_index(b, 0, h), q_stride, q0, kQueriesPerCta, g.seq, hd);
  float delta[kQueriesPerWarp], row_lse[kQueriesPerWarp], acc[kQueriesPerWarp][kDimsPerLane];
#pragma unroll
  for (int u = 0; u < kQueriesPerWarp; ++u) {
    const int qi = q0 + warp * kQueriesPerWarp + u;
    delta[u] = 0.0f;
    row_lse[u] = 0.0f;
    if (qi < g.seq) {
      delta[u] = row_delta(dout + g.q_index(b, qi, h), out + g.q_index(b, qi, h), hd);
      row_lse[u] = lse[(int64_t(b) * g.heads + h) * g.seq + qi];
    }
    for (int c = 0; c < kDimsPerLane; ++c) acc[u][c] = 0.0f;
  }
  const int last_query = min(g.seq - 1, q0 + kQueriesPerCta - 1);
  for (int key0 = 0; key0 <= last_query; key0 += kKeyTile) {
    __syncthreads();
    load_rows(k_s, ldk, k + g.kv_index(b, 0, kvh), kv_stride, key0, kKeyTile, g.seq, hd);
    load_rows(v_s, ldk, v + g.kv_index(b, 0, kvh), kv_stride, key0, kKeyTile, g.seq, hd);
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kQueriesPerWarp; ++u) {
      const int r = warp * kQueriesPerWarp + u, qi = q0 + r;
      if (qi >= g.seq || key0 > qi) continue;
      const bool valid = key0 + lane <= qi;
      float ds = 0.0f;
      if (valid) {
        const float s = g.scale * dot_smem(q_s + r * hd, k_s + lane * ldk, hd);
        const float p = expf(s - row_lse[u]);
        const float dp = dot_smem(do_s + r * hd, v_s + lane * ldk, hd);
        ds = p * (dp - delta[u]);
      }
      for (int j = 0; j < kKeyTile; ++j) {
        const float dsj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
        for (int c = 0; c < kDimsPerLane; ++c) {
          const int d = lane + 32 * c;
          if (d < hd) acc[u][c] = fmaf(dsj, k_s[j * ldk + d], acc[u][c]);
        }
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kQueriesPerWarp; ++u) {
    const int qi = q0 + warp * kQueriesPerWarp + u;
    if (qi >= g.seq) continue;
    T* row = dq + g.q_index(b, qi, h);
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) row[d] = from_f<T>(acc[u][c] * g.scale);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttnThreads)
    attn_dkdv_kernel(T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                     const T* out, const float* lse, AttnGeom g) {
  extern __shared__ float smem[];
  const int hd = g.hd, ldk = hd + 1;
  float* k_s = smem;                                // [32][hd+1]
  float* v_s = k_s + kKeyTile * ldk;                // [32][hd+1]
  float* q_s = v_s + kKeyTile * ldk;                // [8][hd]
  float* do_s = q_s + kBwdQueryChunk * hd;          // [8][hd]
  float* p_s = do_s + kBwdQueryChunk * hd;          // [8][32]
  float* ds_s = p_s + kBwdQueryChunk * kKeyTile;    // [8][32]
  float* delta_s = ds_s + kBwdQueryChunk * kKeyTile;  // [8]
  float* lse_s = delta_s + kBwdQueryChunk;            // [8]
  const int bk = blockIdx.y, b = bk / g.kv_heads, kvh = bk % g.kv_heads;
  const int group = g.heads / g.kv_heads;
  const int key0 = blockIdx.x * kKeyTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q_stride = int64_t(g.heads) * hd, kv_stride = int64_t(g.kv_heads) * hd;
  const int n_elems = kKeyTile * hd;

  load_rows(k_s, ldk, k + g.kv_index(b, 0, kvh), kv_stride, key0, kKeyTile, g.seq, hd);
  load_rows(v_s, ldk, v + g.kv_index(b, 0, kvh), kv_stride, key0, kKeyTile, g.seq, hd);
  float acc_dk[kBwdElems], acc_dv[kBwdElems];
#pragma unroll
  for (int u = 0; u < kBwdElems; ++u) acc_dk[u] = acc_dv[u] = 0.0f;

  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    for (int qs = key0; qs < g.seq; qs += kBwdQueryChunk) {
      __syncthreads();  // the previous chunk's phase 2 is done with q_s, do_s, p_s, ds_s
      load_rows(q_s, hd, q + g.q_index(b, 0, h), q_stride, qs, kBwdQueryChunk, g.seq, hd);
      load_rows(do_s, hd, dout + g.q_index(b, 0, h), q_stride, qs, kBwdQueryChunk, g.seq, hd);
      for (int r = warp; r < kBwdQueryChunk; r += kAttnThreads / 32) {
        const int qi = qs + r;
        float delta = 0.0f;
        if (qi < g.seq) delta = row_delta(dout + g.q_index(b, qi, h), out + g.q_index(b, qi, h), hd);
        if (lane == 0) {
          delta_s[r] = delta;
          lse_s[r] = qi < g.seq ? lse[(int64_t(b) * g.heads + h) * g.seq + qi] : 0.0f;
        }
      }
      __syncthreads();
      // Phase 1: p and ds of the 8 x 32 block (warp per query row, lane per key).
      for (int r = warp; r < kBwdQueryChunk; r += kAttnThreads / 32) {
        const int qi = qs + r, key = key0 + lane;
        float p = 0.0f, ds = 0.0f;
        if (qi < g.seq && key < g.seq && key <= qi) {
          const float s = g.scale * dot_smem(q_s + r * hd, k_s + lane * ldk, hd);
          p = expf(s - lse_s[r]);
          const float dp = dot_smem(do_s + r * hd, v_s + lane * ldk, hd);
          ds = p * (dp - delta_s[r]) * g.scale;
        }
        p_s[r * kKeyTile + lane] = p;
        ds_s[r * kKeyTile + lane] = ds;
      }
      __syncthreads();
      // Phase 2: each thread accumulates its own (key, dim) elements over the 8 rows in order.
#pragma unroll
      for (int u = 0; u < kBwdElems; ++u) {
        const int e = threadIdx.x + kAttnThreads * u;
        if (e < n_elems) {  // no break: keeps the loop unrolled and the accumulators in registers
          const int j = e / hd, d = e % hd;
          for (int r = 0; r < kBwdQueryChunk; ++r) {
            acc_dv[u] = fmaf(p_s[r * kKeyTile + j], do_s[r * hd + d], acc_dv[u]);
            acc_dk[u] = fmaf(ds_s[r * kKeyTile + j], q_s[r * hd + d], acc_dk[u]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kBwdElems; ++u) {
    const int e = threadIdx.x + kAttnThreads * u;
    const int j = e / hd, d = e % hd, key = key0 + j;
    if (e < n_elems && key < g.seq) {
      dk[g.kv_index(b, key, kvh) + d] = from_f<T>(acc_dk[u]);
      dv[g.kv_index(b, key, kvh) + d] = from_f<T>(acc_dv[u]);
    }
  }
}

AttnGeom attn_geometry(const AttnDims& dims, const Tensor& q, const Tensor& k, const Tensor& v,
                       const char* op) {
  MOE_CHECK(dims.batch >= 1 && dims.seq >= 1 && dims.heads >= 1 && dims.kv_heads >= 1 &&
                dims.heads % dims.kv_heads == 0,
            "{}: expected positive dims with heads divisible by kv_heads, found B={} T={} H={} "
            "KV={}", op, dims.batch, dims.seq, dims.heads, dims.kv_heads);
  MOE_CHECK(dims.head_dim >= 1 && dims.head_dim <= kMaxHeadDim,
            "{}: the CUDA attention kernel supports head_dim in [1, {}], found {}", op,
            kMaxHeadDim, dims.head_dim);
  MOE_CHECK(dims.batch * dims.seq < (int64_t(1) << 31), "{}: B*T too large", op);
  // (batch, head) pairs index gridDim.y, which CUDA caps at 65535.
  MOE_CHECK(dims.batch * dims.heads <= 65535, "{}: batch * heads = {} * {} exceeds the 65535 "
            "(batch, head) blocks of one launch; lower the batch size", op, dims.batch,
            dims.heads);
  const int64_t rows = dims.batch * dims.seq;
  check_shape(q, {rows, dims.heads * dims.head_dim}, op);
  check_shape(k, {rows, dims.kv_heads * dims.head_dim}, op);
  check_shape(v, {rows, dims.kv_heads * dims.head_dim}, op);
  MOE_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(),
            "{}: q, k and v must share a dtype, found {} {} {}", op, dtype_name(q.dtype()),
            dtype_name(k.dtype()), dtype_name(v.dtype()));
  return AttnGeom{int(dims.batch), int(dims.seq), int(dims.heads), int(dims.kv_heads),
                  int(dims.head_dim), float(1.0 / std::sqrt(double(dims.head_dim)))};
}

template <typename Kernel> void allow_smem(Kernel kernel, size_t bytes) {
  MOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)));
}

}  // namespace

void CudaBackend::attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const AttnDims& dims) {
  AttnGeom g = attn_geometry(dims, q, k, v, "attention_forward");
  check_shape(out, q.shape(), "attention_forward: out");
  check_shape(lse, {dims.batch, dims.heads, dims.seq}, "attention_forward: lse");
  MOE_CHECK(out.dtype() == q.dtype() && lse.dtype() == DType::kF32,
            "attention_forward: out must be {} and lse f32, found {} {}", dtype_name(q.dtype()),
            dtype_name(out.dtype()), dtype_name(lse.dtype()));
#ifdef MOE_WITH_CUDNN
  if (attention_on_cudnn(dims, q.dtype(), {out.data(), q.data(), k.data(), v.data()},
                         "attention_forward")) {
    cudnn_->forward(out.data(), lse.ptr<float>(), q.data(), k.data(), v.data(), dims);
    after_op("attention_forward");
    return;
  }
#endif
  const size_t smem = sizeof(float) * (kQueriesPerCta * g.hd + 2 * kKeyTile * (g.hd + 1));
  dim3 grid(static_cast<unsigned>(ceil_div(g.seq, kQueriesPerCta)),
            static_cast<unsigned>(g.batch * g.heads));
  MOE_DISPATCH_ACT(q.dtype(), "attention_forward", T, {
    allow_smem(attn_forward_kernel<T>, smem);
    attn_forward_kernel<T><<<grid, kAttnThreads, smem, stream_>>>(
        static_cast<T*>(out.data()), lse.ptr<float>(), static_cast<const T*>(q.data()),
        static_cast<const T*>(k.data()), static_cast<const T*>(v.data()), g);
    MOE_LAUNCH_CHECK("attn_forward_kernel");
  });
  after_op("attention_forward");
}

void CudaBackend::attention_forward_cached(Tensor& out, const Tensor& q, const Tensor& k,
                                           const Tensor& v, const Tensor& k_cache,
                                           const Tensor& v_cache, const Tensor& cache_start,
                                           const Tensor& cache_len, const AttnDims& dims) {
  const char* op = "attention_forward_cached";
  // (batch, head) pairs index gridDim.y (at most 65535): a large batch of short continuations
  // (eval packs rows by tokens) runs in chunks of rows, each an independent launch.
  const int64_t rows_per_launch = 65535 / std::max<int64_t>(1, dims.heads);
  if (dims.batch > rows_per_launch && dims.heads >= 1) {
    const int64_t rows = dims.batch * dims.seq;
    check_shape(q, {rows, dims.heads * dims.head_dim}, "attention_forward_cached: q");
    check_shape(k, {rows, dims.kv_heads * dims.head_dim}, "attention_forward_cached: k");
    check_shape(v, k.shape(), "attention_forward_cached: v");
    check_shape(out, q.shape(), "attention_forward_cached: out");
    check_shape(cache_start, {dims.batch}, "attention_forward_cached: cache_start");
    check_shape(cache_len, {dims.batch}, "attention_forward_cached: cache_len");
    for (int64_t b0 = 0; b0 < dims.batch; b0 += rows_per_launch) {
      const int64_t b1 = std::min(dims.batch, b0 + rows_per_launch);
      AttnDims part = dims;
      part.batch = b1 - b0;
      Tensor out_part = out.rows(b0 * dims.seq, b1 * dims.seq);
      attention_forward_cached(out_part, q.rows(b0 * dims.seq, b1 * dims.seq),
                               k.rows(b0 * dims.seq, b1 * dims.seq),
                               v.rows(b0 * dims.seq, b1 * dims.seq), k_cache, v_cache,
                               cache_start.rows(b0, b1), cache_len.rows(b0, b1), part);
    }
    return;
  }
  AttnGeom g = attn_geometry(dims, q, k, v, op);
  check_shape(out, q.shape(), "attention_forward_cached: out");
  MOE_CHECK(k_cache.ndim() == 2 && k_cache.dim(1) == dims.kv_heads * dims.head_dim,
            "{}: k_cache must be [C, {}], found {}", op, dims.kv_heads * dims.head_dim,
            shape_str(k_cache.shape()));
  check_shape(v_cache, k_cache.shape(), "attention_forward_cached: v_cache");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&out, &k_cache, &v_cache})
    MOE_CHECK(t->dtype() == q.dtype(), "{}: expected out and the cache in {}, found {}", op,
              dtype_name(q.dtype()), dtype_name(t->dtype()));
  for (const Tensor* t : std::initializer_list<const Tensor*>{&cache_start, &cache_len}) {
    check_shape(*t, {dims.batch}, "attention_forward_cached: cache_start / cache_len");
    MOE_CHECK(t->dtype() == DType::kI32 && t->device() == Device::kCuda,
              "{}: cache_start and cache_len must be i32 CUDA tensors, found {}", op,
              dtype_name(t->dtype()));
  }
#ifdef MOE_WITH_CUDNN
  if (attention_on_cudnn(dims, q.dtype(), {out.data(), q.data()}, op)) {
    cudnn_attention_forward_cached(out, q, k, v, k_cache, v_cache, cache_start, cache_len, dims);
    return;
  }
#endif
  const CacheSpans spans{cache_start.ptr<int32_t>(), cache_len.ptr<int32_t>(), k_cache.dim(0)};
  const size_t smem = sizeof(float) * (kQueriesPerCta * g.hd + 2 * kKeyTile * (g.hd + 1));
  dim3 grid(static_cast<unsigned>(ceil_div(g.seq, kQueriesPerCta)),
            static_cast<unsigned>(g.batch * g.heads));
  MOE_DISPATCH_ACT(q.dtype(), op, T, {
    allow_smem(attn_cached_forward_kernel<T>, smem);
    attn_cached_forward_kernel<T><<<grid, kAttnThreads, smem, stream_>>>(
        static_cast<T*>(out.data()), static_cast<const T*>(q.data()),
        static_cast<const T*>(k.data()), static_cast<const T*>(v.data()),
        static_cast<const T*>(k_cache.data()), static_cast<const T*>(v_cache.data()), spans, g,
        error_flag_);
    MOE_LAUNCH_CHECK("attn_cached_forward_kernel");
  });
  after_op(op);
}

void CudaBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                     const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& out, const Tensor& lse,
                                     const AttnDims& dims) {
  AttnGeom g = attn_geometry(dims, q, k, v, "attention_backward");
  check_shape(dq, q.shape(), "attention_backward: dq");
  check_shape(dout, q.shape(), "attention_backward: dout");
  check_shape(out, q.shape(), "attention_backward: out");
  check_shape(dk, k.shape(), "attention_backward: dk");
  check_shape(dv, v.shape(), "attention_backward: dv");
  check_shape(lse, {dims.batch, dims.heads, dims.seq}, "attention_backward: lse");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dq, &dk, &dv, &dout, &out})
    MOE_CHECK(t->dtype() == q.dtype(), "attention_backward: expected every activation in {}, "
              "found {}", dtype_name(q.dtype()), dtype_name(t->dtype()));
  MOE_CHECK(lse.dtype() == DType::kF32, "attention_backward: lse must be f32");
#ifdef MOE_WITH_CUDNN
  if (attention_on_cudnn(dims, q.dtype(),
                         {dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                          v.data(), out.data()},
                         "attention_backward")) {
    cudnn_->backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                     out.data(), lse.ptr<float>(), dims);
    after_op("attention_backward");
    return;
  }
#endif
  const size_t smem_dq = sizeof(float) * (2 * kQueriesPerCta * g.hd + 2 * kKeyTile * (g.hd + 1));
  const size_t smem_dkdv =
      sizeof(float) * (2 * kKeyTile * (g.hd + 1) + 2 * kBwdQueryChunk * g.hd +
                       2 * kBwdQueryChunk * kKeyTile + 2 * kBwdQueryChunk);
  dim3 grid_q(static_cast<unsigned>(ceil_div(g.seq, kQueriesPerCta)),
              static_cast<unsigned>(g.batch * g.heads));
  dim3 grid_k(static_cast<unsigned>(ceil_div(g.seq, kKeyTile)),
              static_cast<unsigned>(g.batch * g.kv_heads));
  MOE_DISPATCH_ACT(q.dtype(), "attention_backward", T, {
    allow_smem(attn_dq_kernel<T>, smem_dq);
    attn_dq_kernel<T><<<grid_q, kAttnThreads, smem_dq, stream_>>>(
        static_cast<T*>(dq.data()), static_cast<const T*>(dout.data()),
        static_cast<const T*>(q.data()), static_cast<const T*>(k.data()),
        static_cast<const T*>(v.data()), static_cast<const T*>(out.data()), lse.ptr<float>(), g);
    MOE_LAUNCH_CHECK("attn_dq_kernel");
    allow_smem(attn_dkdv_kernel<T>, smem_dkdv);
    attn_dkdv_kernel<T><<<grid_k, kAttnThreads, smem_dkdv, stream_>>>(
        static_cast<T*>(dk.data()), static_cast<T*>(dv.data()),
        static_cast<const T*>(dout.data()), static_cast<const T*>(q.data()),
        static_cast<const T*>(k.data()), static_cast<const T*>(v.data()),
        static_cast<const T*>(out.data()), lse.ptr<float>(), g);
    MOE_LAUNCH_CHECK("attn_dkdv_kernel");
  });
  after_op("attention_backward");
}

}  // namespace moe
