// Shared helpers of the CUDA kernels: error-checking macros that raise moe::Error with the failing
// expression, launch checks, bf16 <-> f32 conversion, dtype dispatch for the host wrappers, and
// deterministic reductions.
//
// Determinism: every reduction here has a fixed order for a given problem size. Block reductions
// use CUB's BlockReduce (a fixed tree), and global sums are two-pass: a fixed number of blocks,
// each summing a contiguous chunk, then one block summing the partials. No float atomics anywhere.
#pragma once
#include <cstdint>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include "core/error.h"
#include "core/tensor.h"

// ---- error checks ---------------------------------------------------------------------------
#define MOE_CUDA_CHECK(expr)                                                                  \
  do {                                                                                        \
    cudaError_t moe_cuda_err_ = (expr);                                                       \
    if (moe_cuda_err_ != cudaSuccess)                                                         \
      ::moe::raise(__FILE__, __LINE__,                                                        \
                   fmt::format("CUDA call `{}` failed: {} ({})", #expr,                      \
                               cudaGetErrorName(moe_cuda_err_),                               \
                               cudaGetErrorString(moe_cuda_err_)));                           \
  } while (0)

// cuBLAS and cuBLASLt share cublasStatus_t.
#define MOE_CUBLAS_CHECK(expr)                                                                \
  do {                                                                                        \
    cublasStatus_t moe_cublas_st_ = (expr);                                                   \
    if (moe_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                              \
      ::moe::raise(__FILE__, __LINE__,                                                        \
                   fmt::format("cuBLAS call `{}` failed: {} ({})", #expr,                    \
                               cublasGetStatusName(moe_cublas_st_),                           \
                               cublasGetStatusString(moe_cublas_st_)));                       \
  } while (0)
#define MOE_CUBLASLT_CHECK(expr) MOE_CUBLAS_CHECK(expr)

// After every kernel launch: catches bad launch configurations immediately (asynchronous faults
// surface at the next synchronising call, or right away with debug_sync).
#define MOE_LAUNCH_CHECK(kernel_name)                                                         \
  do {                                                                                        \
    cudaError_t moe_launch_err_ = cudaGetLastError();                                         \
    if (moe_launch_err_ != cudaSuccess)                                                       \
      ::moe::raise(__FILE__, __LINE__,                                                        \
                   fmt::format("launch of kernel {} failed: {} ({})", kernel_name,            \
                               cudaGetErrorName(moe_launch_err_),                             \
                               cudaGetErrorString(moe_launch_err_)));                         \
  } while (0)

// Host-side dtype dispatch: runs the body with `T` bound to the element type of an activation
// tensor (f32 or bf16).
#define MOE_DISPATCH_ACT(dtype, op_name, T, ...)                                               \
  do {                                                                                        \
    switch (dtype) {                                                                          \
      case ::moe::DType::kF32: {                                                              \
        using T = float;                                                                      \
        __VA_ARGS__;                                                                          \
        break;                                                                                \
      }                                                                                       \
      case ::moe::DType::kBF16: {                                                             \
        using T = __nv_bfloat16;                                                              \
        __VA_ARGS__;                                                                          \
        break;                                                                                \
      }                                                                                       \
      default:                                                                                \
        MOE_FAIL("{}: the CUDA backend supports f32 and bf16 activations, found {}", op_name, \
                 ::moe::dtype_name(dtype));                                                   \
    }                                                                                         \
  } while (0)

namespace moe::cuda {

constexpr int kBlock = 256;  // default threads per block of elementwise kernels

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ __forceinline__ int ceil_div_i(int a, int b) { return (a + b - 1) / b; }

// Grid size for a grid-stride loop over n elements (capped: the loop covers the rest).
inline unsigned grid_for(int64_t n, int block = kBlock) {
  int64_t g = ceil_div(n > 0 ? n : 1, block);
  return static_cast<unsigned>(g < 65535 * 8 ? g : 65535 * 8);
}

// Grid size for a kernel with one thread per element and NO grid-stride loop: never capped
// (grid_for's cap would silently leave elements past 65535 * 8 blocks unprocessed).
inline unsigned grid_cover(int64_t n, int block = kBlock) {
  return static_cast<unsigned>(ceil_div(n > 0 ? n : 1, block));
}

// ---- bf16 helpers -----------------------------------------------------------------------------
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);  // round to nearest even
}

// ---- warp reductions (butterfly: every lane ends with the same, order-fixed result) -----------
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum whose result every thread receives. `kThreads` must equal blockDim.x.
template <int kThreads, typename V> __device__ V block_sum_all(V v) {
  using Reduce = cub::BlockReduce<V, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ V result;
  V total = Reduce(temp).Sum(v);
  if (threadIdx.x == 0) result = total;
  __syncthreads();
  V out = result;
  __syncthreads();  // temp and result may be reused by the next call
  return out;
}
template <int kThreads> __device__ float block_max_all(float v) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ float result;
  float total = Reduce(temp).Reduce(v, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) result = total;
  __syncthreads();
  float out = result;
  __syncthreads();
  return out;
}

// ---- deterministic global sums ---------------------------------------------------------------
constexpr int kSumBlocks = 256;  // fixed partition count: the order depends only on n

template <typename F>
__global__ void partial_sum_kernel(int64_t n, F term, double* partials) {
  int64_t chunk = (n + gridDim.x - 1) / gridDim.x;
  int64_t begin = chunk * blockIdx.x;
  int64_t end = begin + chunk < n ? begin + chunk : n;
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += term(i);
  double total = block_sum_all<kBlock>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void finish_sum_kernel(const double* partials, float* out, double scale,
                                  bool accumulate);

// out[0] = (accumulate ? out[0] : 0) + scale * sum_{i<n} term(i), in a fixed order.
// `partials` is device scratch of kSumBlocks doubles.
template <typename F>
void deterministic_sum(cudaStream_t stream, int64_t n, F term, double* partials, float* out,
                       double scale, bool accumulate) {
  partial_sum_kernel<<<kSumBlocks, kBlock, 0, stream>>>(n, term, partials);
  MOE_LAUNCH_CHECK("partial_sum_kernel");
  finish_sum_kernel<<<1, kBlock, 0, stream>>>(partials, out, scale, accumulate);
  MOE_LAUNCH_CHECK("finish_sum_kernel");
}

// Device error codes raised by kernels on bad input (checked at synchronize/download and after
// every op with debug_sync). Integer atomicOr: order-independent, so still deterministic.
enum DeviceError : int {
  kErrTokenId = 1,      // embedding id outside [0, V)
  kErrExpertIndex = 2,  // top-k index outside [0, E)
  kErrTarget = 4,       // cross-entropy target >= V
  kErrCacheSpan = 8,    // KV-cache span outside the cache, or a negative RoPE offset
};
__device__ __forceinline__ void raise_device_error(int* flag, int code) { atomicOr(flag, code); }

}  // namespace moe::cuda
