// CudaBackend core: construction, the entry points of cuda_entry.h, memory (allocation with an
// actionable out-of-memory message, upload/download/copy), device-error reporting, scratch, and
// the elementwise ops (fill, convert, add, axpy, scale).
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "cuda_backend.h"
#include "cuda_entry.h"

namespace moe {
namespace cuda {

__global__ void finish_sum_kernel(const double* partials, float* out, double scale,
                                  bool accumulate) {
  double v = 0.0;
  for (int i = threadIdx.x; i < kSumBlocks; i += blockDim.x) v += partials[i];
  double total = block_sum_all<kBlock>(v);
  if (threadIdx.x == 0) {
    float prev = accumulate ? out[0] : 0.0f;
    out[0] = prev + static_cast<float>(total * scale);
  }
}

namespace {

template <typename T> __global__ void fill_kernel(T* y, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = value;
}

template <typename Y, typename X> __device__ __forceinline__ Y convert_one(X x) {
  return static_cast<Y>(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 convert_one(float x) { return from_f<__nv_bfloat16>(x); }
template <> __device__ __forceinline__ __nv_bfloat16 convert_one(double x) {
  return from_f<__nv_bfloat16>(static_cast<float>(x));
}
template <> __device__ __forceinline__ __nv_bfloat16 convert_one(int32_t x) {
  return from_f<__nv_bfloat16>(static_cast<float>(x));
}
template <> __device__ __forceinline__ float convert_one(__nv_bfloat16 x) { return to_f(x); }
template <> __device__ __forceinline__ double convert_one(__nv_bfloat16 x) { return to_f(x); }
template <> __device__ __forceinline__ int32_t convert_one(__nv_bfloat16 x) {
  return static_cast<int32_t>(to_f(x));
}
template <> __device__ __forceinline__ __nv_bfloat16 convert_one(__nv_bfloat16 x) { return x; }

template <typename Y, typename X> __global__ void convert_kernel(Y* y, const X* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = convert_one<Y, X>(x[i]);
}

template <typename T> __global__ void add_kernel(T* y, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}

template <typename T> __global__ void axpy_kernel(T* y, const T* x, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(to_f(y[i]) + alpha * to_f(x[i]));
}

template <typename T> __global__ void scale_kernel(T* y, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(alpha * to_f(y[i]));
}

// Host dispatch over all four storage dtypes (fill and convert accept every dtype).
template <typename F> void dispatch_any(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32: f(float{}); return;
    case DType::kF64: f(double{}); return;
    case DType::kBF16: f(__nv_bfloat16{}); return;
    case DType::kI32: f(int32_t{}); return;
  }
  MOE_FAIL("unknown dtype {}", static_cast<int>(dtype));
}

std::string describe_device_errors(int flags) {
  std::string msg;
  if (flags & kErrTokenId) msg += "a token id outside [0, vocab_size) reached embedding; ";
  if (flags & kErrExpertIndex) msg += "a top-k expert index outside [0, n_experts); ";
  if (flags & kErrTarget) msg += "a cross-entropy target >= vocab_size; ";
  if (flags & kErrCacheSpan) msg += "a KV-cache span outside the cache or a negative RoPE offset; ";
  return msg;
}

}  // namespace
}  // namespace cuda

using namespace cuda;

// ---- entry points ----------------------------------------------------------------------------

int cuda_device_count() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return count;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  auto backend = std::make_unique<CudaBackend>(device);
  const char* env = std::getenv("MOE_DEBUG_SYNC");
  if (env != nullptr && std::strcmp(env, "0") != 0 && env[0] != '\0') backend->set_debug_sync(true);
  return backend;
}

CudaBackend::CudaBackend(int device) : device_(device) {
  MOE_CUDA_CHECK(cudaSetDevice(device_));
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  MOE_CUBLAS_CHECK(cublasLtCreate(&lt_));
  MOE_CUBLAS_CHECK(cublasCreate(&blas_));
  MOE_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
  // No TF32: f32 matmuls stay full precision so they match the CPU reference.
  MOE_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
  gemm_workspace_bytes_ = size_t(32) << 20;
  MOE_CUDA_CHECK(cudaMalloc(&gemm_workspace_, gemm_workspace_bytes_));
  MOE_CUDA_CHECK(cudaMalloc(&error_flag_, sizeof(int)));
  MOE_CUDA_CHECK(cudaMemsetAsync(error_flag_, 0, sizeof(int), stream_));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  cudaDeviceProp prop{};
  MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  spdlog::info("cuda:{}: {} (sm_{}{}, {:.1f} GiB)", device_, prop.name, prop.major, prop.minor,
               prop.totalGlobalMem / double(1ull << 30));
}

CudaBackend::~CudaBackend() {
  // Destructors must not throw: report and continue releasing.
  if (cudaStreamSynchronize(stream_) != cudaSuccess)
    spdlog::error("cuda:{}: stream failed while shutting down", device_);
  for (void* p : scratch_ptr_) cudaFree(p);
  gemm_plans_.clear();  // their cuBLASLt descriptors, before the handle goes
  cudaFree(error_flag_);
  cudaFree(gemm_workspace_);
  if (blas_ != nullptr) cublasDestroy(blas_);
  if (lt_ != nullptr) cublasLtDestroy(lt_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

bool CudaBackend::supports(OpKind op, DType dtype) const {
  if (dtype == DType::kF32) return true;
  switch (op) {
    case OpKind::fill:
    case OpKind::convert: return true;  // any storage dtype
    default: break;
  }
  if (dtype != DType::kBF16) return false;
  switch (op) {
    // bf16 activations (router, losses on probabilities, optimizer: f32 only).
    case OpKind::embedding_forward: case OpKind::embedding_backward:
    case OpKind::rms_norm_forward: case OpKind::rms_norm_backward:
    case OpKind::matmul_forward: case OpKind::matmul_backward:
    case OpKind::grouped_matmul_forward: case OpKind::grouped_matmul_backward:
    case OpKind::rope_forward: case OpKind::rope_backward: case OpKind::rope_forward_offset:
    case OpKind::attention_forward: case OpKind::attention_backward:
    case OpKind::attention_forward_cached:
    case OpKind::swiglu_forward: case OpKind::swiglu_backward:
    case OpKind::moe_dispatch_plan:  // integer indices only: the same op in any activation dtype
    case OpKind::moe_permute: case OpKind::moe_permute_backward:
    case OpKind::moe_unpermute: case OpKind::moe_unpermute_backward:
    case OpKind::cross_entropy_forward: case OpKind::cross_entropy_backward:
    case OpKind::sp_loss_forward: case OpKind::sp_loss_backward:
    case OpKind::add: case OpKind::axpy: case OpKind::scale:
      return true;
    default:
      return false;
  }
}

// ---- memory ----------------------------------------------------------------------------------

Tensor CudaBackend::empty(const Shape& shape, DType dtype) {
  int64_t n = 1;
  for (int64_t s : shape) {
    MOE_CHECK(s >= 0, "empty: negative dimension in shape {}", shape_str(shape));
    n *= s;
  }
  size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  size_t alloc = bytes > 0 ? bytes : 16;  // a defined tensor always has storage
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, alloc);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    MOE_FAIL("cuda:{}: out of memory allocating {} bytes ({:.2f} MiB) for a {} tensor of shape "
             "{} ({:.2f} of {:.2f} GiB free). Lower train.batch_size or enable train.recompute",
             device_, bytes, bytes / double(1 << 20), dtype_name(dtype), shape_str(shape),
             free_b / double(1ull << 30), total_b / double(1ull << 30));
  }
  MOE_CUDA_CHECK(err);
  int device = device_;
  std::shared_ptr<void> storage(ptr, [device](void* p) {
    if (cudaFree(p) != cudaSuccess) spdlog::error("cuda:{}: cudaFree failed", device);
  });
  return Tensor(std::move(storage), ptr, shape, dtype, Device::kCuda);
}

void CudaBackend::upload(Tensor& dst, const void* host, size_t bytes) {
  MOE_CHECK(dst.device() == Device::kCuda, "upload: destination is not a CUDA tensor");
  MOE_CHECK(bytes == dst.nbytes(), "upload: {} bytes into a tensor of {} bytes ({} {})", bytes,
            dst.nbytes(), dtype_name(dst.dtype()), shape_str(dst.shape()));
  if (bytes == 0) return;
  MOE_CUDA_CHECK(cudaMemcpyAsync(dst.data(), host, bytes, cudaMemcpyHostToDevice, stream_));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host buffer may go away on return
  after_op("upload");
}

void CudaBackend::download(void* host, const Tensor& src, size_t bytes) {
  MOE_CHECK(src.device() == Device::kCuda, "download: source is not a CUDA tensor");
  MOE_CHECK(bytes == src.nbytes(), "download: {} bytes from a tensor of {} bytes ({} {})", bytes,
            src.nbytes(), dtype_name(src.dtype()), shape_str(src.shape()));
  if (bytes > 0)
    MOE_CUDA_CHECK(cudaMemcpyAsync(host, src.data(), bytes, cudaMemcpyDeviceToHost, stream_));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check_device_errors("download");
}

void CudaBackend::copy(Tensor& dst, const Tensor& src) {
  MOE_CHECK(dst.dtype() == src.dtype() && dst.numel() == src.numel(),
            "copy: expected the same dtype and size, found {} {} <- {} {}", dtype_name(dst.dtype()),
            shape_str(dst.shape()), dtype_name(src.dtype()), shape_str(src.shape()));
  if (dst.nbytes() > 0)
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.nbytes(),
                                   cudaMemcpyDeviceToDevice, stream_));
  after_op("copy");
}

void CudaBackend::synchronize() {
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check_device_errors("synchronize");
}

void CudaBackend::check_device_errors(const char* where) {
  int flags = 0;
  MOE_CUDA_CHECK(cudaMemcpyAsync(&flags, error_flag_, sizeof(int), cudaMemcpyDeviceToHost,
                                 stream_));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (flags != 0) {
    MOE_CUDA_CHECK(cudaMemsetAsync(error_flag_, 0, sizeof(int), stream_));
    MOE_FAIL("cuda:{}: bad input detected on the device (seen at {}): {}", device_, where,
             describe_device_errors(flags));
  }
}

void CudaBackend::after_op(const char* op) {
  if (!debug_sync_) return;
  cudaError_t err = cudaStreamSynchronize(stream_);
  if (err != cudaSuccess)
    MOE_FAIL("cuda:{}: op {} failed (debug_sync): {} ({})", device_, op, cudaGetErrorName(err),
             cudaGetErrorString(err));
  check_device_errors(op);
}

void* CudaBackend::scratch(ScratchSlot slot, size_t bytes) {
  if (bytes > scratch_bytes_[slot]) {
    size_t grow = bytes + bytes / 2;
    if (scratch_ptr_[slot] != nullptr) {
      MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // earlier ops may still read it
      MOE_CUDA_CHECK(cudaFree(scratch_ptr_[slot]));
      scratch_ptr_[slot] = nullptr;
    }
    cudaError_t err = cudaMalloc(&scratch_ptr_[slot], grow);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      scratch_bytes_[slot] = 0;
      MOE_FAIL("cuda:{}: out of memory allocating {} bytes of op scratch. Lower "
               "train.batch_size or enable train.recompute", device_, grow);
    }
    MOE_CUDA_CHECK(err);
    scratch_bytes_[slot] = grow;
  }
  return scratch_ptr_[slot];
}

// ---- elementwise -----------------------------------------------------------------------------

void CudaBackend::fill(Tensor& y, double value) {
  int64_t n = y.numel();
  if (n == 0) return;
  dispatch_any(y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T v;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) v = __float2bfloat16_rn(float(value));
    else v = static_cast<T>(value);
    fill_kernel<T><<<grid_for(n), kBlock, 0, stream_>>>(static_cast<T*>(y.data()), n, v);
    MOE_LAUNCH_CHECK("fill_kernel");
  });
  after_op("fill");
}

void CudaBackend::convert(Tensor& y, const Tensor& x) {
  MOE_CHECK(y.numel() == x.numel(), "convert: {} elements into {}", x.numel(), y.numel());
  int64_t n = y.numel();
  if (n == 0) return;
  dispatch_any(y.dtype(), [&](auto ytag) {
    dispatch_any(x.dtype(), [&](auto xtag) {
      using Y = decltype(ytag);
      using X = decltype(xtag);
      convert_kernel<Y, X><<<grid_for(n), kBlock, 0, stream_>>>(
          static_cast<Y*>(y.data()), static_cast<const X*>(x.data()), n);
      MOE_LAUNCH_CHECK("convert_kernel");
    });
  });
  after_op("convert");
}

void CudaBackend::add(Tensor& y, const Tensor& a, const Tensor& b) {
  MOE_CHECK(y.numel() == a.numel() && y.numel() == b.numel() && y.dtype() == a.dtype() &&
                y.dtype() == b.dtype(),
            "add: expected equal sizes and dtypes, found {} {} = {} {} + {} {}",
            dtype_name(y.dtype()), shape_str(y.shape()), dtype_name(a.dtype()),
            shape_str(a.shape()), dtype_name(b.dtype()), shape_str(b.shape()));
  int64_t n = y.numel();
  if (n == 0) return;
  MOE_DISPATCH_ACT(y.dtype(), "add", T, {
    add_kernel<T><<<grid_for(n), kBlock, 0, stream_>>>(
        static_cast<T*>(y.data()), static_cast<const T*>(a.data()),
        static_cast<const T*>(b.data()), n);
    MOE_LAUNCH_CHECK("add_kernel");
  });
  after_op("add");
}

void CudaBackend::axpy(Tensor& y, const Tensor& x, float alpha) {
  MOE_CHECK(y.numel() == x.numel() && y.dtype() == x.dtype(),
            "axpy: expected equal sizes and dtypes, found {} {} += a * {} {}",
            dtype_name(y.dtype()), shape_str(y.shape()), dtype_name(x.dtype()),
            shape_str(x.shape()));
  int64_t n = y.numel();
  if (n == 0) return;
  MOE_DISPATCH_ACT(y.dtype(), "axpy", T, {
    axpy_kernel<T><<<grid_for(n), kBlock, 0, stream_>>>(
        static_cast<T*>(y.data()), static_cast<const T*>(x.data()), alpha, n);
    MOE_LAUNCH_CHECK("axpy_kernel");
  });
  after_op("axpy");
}

void CudaBackend::scale(Tensor& y, float alpha) {
  int64_t n = y.numel();
  if (n == 0) return;
  MOE_DISPATCH_ACT(y.dtype(), "scale", T, {
    scale_kernel<T><<<grid_for(n), kBlock, 0, stream_>>>(static_cast<T*>(y.data()), alpha, n);
    MOE_LAUNCH_CHECK("scale_kernel");
  });
  after_op("scale");
}

}  // namespace moe
