// The choice between the native attention kernels (attention.cu) and cuDNN's fused SDPA
// (cudnn_attention.h) for each attention op, and the KV-cache forward on cuDNN: it first gathers
// each row's [cached prefix, new keys] into contiguous padded buffers (cudnn_gather_kv_kernel),
// then runs one padded, bottom-right-causal SDPA.
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <string>

#include <spdlog/spdlog.h>

#include "attention_spans.cuh"
#include "cuda_backend.h"
#include "cudnn_attention.h"

namespace moe {
using namespace cuda;

namespace {

// The KV-cache forward on cuDNN: k_all / v_all [B, s_kv, KV*hd] hold row b's cached prefix
// (cache_len[b] rows of the cache from cache_start[b]) then its T new keys, zero past them (the
// padding mask hides those keys, but a NaN there would still reach P.V); seq_q[b] = T and
// seq_kv[b] = cache_len[b] + T. A span outside the cache or longer than the host's bound
// (s_kv - T) raises kErrCacheSpan and is read as no prefix, as in the native kernel.
template <typename T>
__global__ void cudnn_gather_kv_kernel(T* k_all, T* v_all, int32_t* seq_q, int32_t* seq_kv,
                                       const T* k, const T* v, const T* k_cache,
                                       const T* v_cache, CacheSpans spans, int batch, int seq,
                                       int64_t s_kv, int64_t width, int* error_flag) {
  const int64_t total = int64_t(batch) * s_kv * width;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % width, j = (i / width) % s_kv;
    const int b = static_cast<int>(i / (width * s_kv));
    int start = spans.start[b], len = spans.len[b];
    if (start < 0 || len < 0 || int64_t(start) + len > spans.rows || int64_t(len) + seq > s_kv) {
      if (j == 0 && c == 0) raise_device_error(error_flag, kErrCacheSpan);
      start = 0;
      len = 0;
    }
    T kx = from_f<T>(0.0f), vx = from_f<T>(0.0f);
    if (j < len) {
      kx = k_cache[(int64_t(start) + j) * width + c];
      vx = v_cache[(int64_t(start) + j) * width + c];
    } else if (j < int64_t(len) + seq) {
      const int64_t row = int64_t(b) * seq + (j - len);
      kx = k[row * width + c];
      vx = v[row * width + c];
    }
    k_all[i] = kx;
    v_all[i] = vx;
    if (j == 0 && c == 0) {
      seq_q[b] = seq;
      seq_kv[b] = len + seq;
    }
  }
}

}  // namespace

void CudaBackend::set_attention_impl(AttentionImpl impl) {
  attention_impl_ = impl;
  if (impl == AttentionImpl::kNative) return;
#ifdef MOE_WITH_CUDNN
  if (cudnn_) return;
  try {
    cudnn_ = std::make_shared<CudnnAttention>(
        device_, stream_, [this](size_t bytes) { return scratch(kScratchCudnn, bytes); });
  } catch (const Error& e) {
    // cudnn: the user asked for it, so its absence is their error. auto: native, said once.
    if (impl == AttentionImpl::kCudnn || e.kind() != ErrorKind::kUsage) throw;
    spdlog::info("train.attention auto: native attention kernels ({})", e.what());
  }
#else
  MOE_USAGE_CHECK(impl != AttentionImpl::kCudnn,
                  "train.attention: 'cudnn', but this build has no cuDNN attention (it was "
                  "configured without the cudnn-frontend headers: run tools/setup.sh, then "
                  "reconfigure with -DMOE_CUDNN=ON); use auto or native");
#endif
}

bool CudaBackend::attention_on_cudnn(const AttnDims& dims, DType dtype,
                                     std::initializer_list<const void*> pointers,
                                     const char* op) const {
  if (attention_impl_ == AttentionImpl::kNative) return false;
#ifdef MOE_WITH_CUDNN
  const bool cached = std::strcmp(op, "attention_forward_cached") == 0;
  // cuDNN 9's SDPA backward refuses s_q = s_kv = 1 ("validate failed: s_q = s_kv = 1 is not
  // supported", seen on an H200). Attention over a single key is a copy of v, so the native
  // kernels serve that one shape, forward and backward alike (the lse convention is shared); the
  // KV-cache forward at T = 1 attends to the cache as well and stays on cuDNN.
  if (dims.seq == 1 && !cached) return false;
  const std::string why = CudnnAttention::ineligible_reason(dims, dtype, pointers);
  if (attention_impl_ == AttentionImpl::kAuto) {
    // auto: cuDNN's fused attention for training's forward and backward wherever the library,
    // the GPU, the dtype and the shape allow it (it passed its GPU tests: docs/gpu.md), else the
    // native kernels. The KV-cache forward stays native under auto: decoding is bound by reading
    // the cache, which the cuDNN path must first gather into padded buffers.
    if (!cudnn_ || cached || !why.empty()) return false;
    return std::strcmp(op, "attention_backward") == 0 ? cudnn_->can_run_backward(dims)
                                                       : cudnn_->can_run_forward(dims);
  }
  MOE_USAGE_CHECK(why.empty(), "{}: train.attention 'cudnn' cannot run {}: {}", op,
                  shape_str({dims.batch, dims.seq, dims.heads, dims.kv_heads, dims.head_dim}),
                  why);
  return true;
#else
  return false;  // set_attention_impl never selects cuDNN in this build
#endif
}

void CudaBackend::cudnn_attention_forward_cached(Tensor& out, const Tensor& q, const Tensor& k,
                                                 const Tensor& v, const Tensor& k_cache,
                                                 const Tensor& v_cache,
                                                 const Tensor& cache_start,
                                                 const Tensor& cache_len, const AttnDims& dims) {
#ifdef MOE_WITH_CUDNN
  const char* op = "attention_forward_cached";
  // Keys per row: the host's bound on the prefix (else the whole cache) plus the new tokens,
  // rounded up to 64 so that nearby bounds share one cached plan.
  const int64_t cache_rows = k_cache.dim(0);
  const int64_t bound =
      dims.cache_len_max >= 0 ? std::min(dims.cache_len_max, cache_rows) : cache_rows;
  const int64_t s_kv = ceil_div(bound + dims.seq, int64_t(64)) * 64;
  const int64_t width = dims.kv_heads * dims.head_dim;
  const size_t kv_bytes = size_t(dims.batch * s_kv * width) * dtype_size(q.dtype());
  const size_t kv_aligned = (kv_bytes + 255) / 256 * 256;
  char* base = static_cast<char*>(
      scratch(kScratchA, 2 * kv_aligned + 2 * size_t(dims.batch) * sizeof(int32_t)));
  void* k_all = base;
  void* v_all = base + kv_aligned;
  int32_t* seq_q = reinterpret_cast<int32_t*>(base + 2 * kv_aligned);
  int32_t* seq_kv = seq_q + dims.batch;
  const CacheSpans spans{cache_start.ptr<int32_t>(), cache_len.ptr<int32_t>(), cache_rows};
  MOE_DISPATCH_ACT(q.dtype(), op, T, {
    cudnn_gather_kv_kernel<T><<<grid_for(dims.batch * s_kv * width), kBlock, 0, stream_>>>(
        static_cast<T*>(k_all), static_cast<T*>(v_all), seq_q, seq_kv,
        static_cast<const T*>(k.data()), static_cast<const T*>(v.data()),
        static_cast<const T*>(k_cache.data()), static_cast<const T*>(v_cache.data()), spans,
        int(dims.batch), int(dims.seq), s_kv, width, error_flag_);
    MOE_LAUNCH_CHECK("cudnn_gather_kv_kernel");
  });
  cudnn_->forward_padded(out.data(), q.data(), k_all, v_all, seq_q, seq_kv, s_kv, dims);
  after_op(op);
#else
  MOE_FAIL("cudnn_attention_forward_cached: this build has no cuDNN attention");
#endif
}

}  // namespace moe
