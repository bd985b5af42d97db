// Embedding lookup and its backward pass.
//
// Backward is a scatter-add of token rows into the table. To stay deterministic without float
// atomics, each thread owns one column of the table and walks the tokens in order, so every
// element dtable[v][c] is summed by one thread in token order (parallelism = d columns; rows of
// the same id are never split across threads).
#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

template <typename T>
__global__ void embedding_forward_kernel(T* y, const int32_t* ids, const T* table, int64_t n,
                                         int64_t d, int64_t vocab, int* error_flag) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * d;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / d, c = i % d;
    int32_t id = ids[t];
    if (id < 0 || id >= vocab) {
      raise_device_error(error_flag, kErrTokenId);
      y[i] = from_f<T>(0.0f);
      continue;
    }
    y[i] = table[int64_t(id) * d + c];
  }
}

template <typename T>
__global__ void embedding_backward_kernel(float* dtable, const T* dy, const int32_t* ids,
                                          int64_t n, int64_t d, int64_t vocab) {
  int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= d) return;
  for (int64_t t = 0; t < n; ++t) {
    int32_t id = ids[t];
    if (id < 0 || id >= vocab) continue;  // reported by the forward pass
    dtable[int64_t(id) * d + c] += to_f(dy[t * d + c]);
  }
}

}  // namespace

void CudaBackend::embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) {
  MOE_CHECK(table.ndim() == 2, "embedding_forward: table expected [V, d], found {}",
            shape_str(table.shape()));
  int64_t vocab = table.dim(0), d = table.dim(1), n = ids.numel();
  check_shape(y, {n, d}, "embedding_forward: y");
  MOE_CHECK(ids.dtype() == DType::kI32 && y.dtype() == table.dtype(),
            "embedding_forward: ids must be i32 and y match the table dtype {}, found {} {}",
            dtype_name(table.dtype()), dtype_name(ids.dtype()), dtype_name(y.dtype()));
  if (n * d == 0) return;
  MOE_DISPATCH_ACT(y.dtype(), "embedding_forward", T, {
    embedding_forward_kernel<T><<<grid_for(n * d), kBlock, 0, stream_>>>(
        static_cast<T*>(y.data()), ids.ptr<int32_t>(), static_cast<const T*>(table.data()), n,
        d, vocab, error_flag_);
    MOE_LAUNCH_CHECK("embedding_forward_kernel");
  });
  after_op("embedding_forward");
}

void CudaBackend::embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) {
  MOE_CHECK(dtable.ndim() == 2, "embedding_backward: dtable expected [V, d], found {}",
            shape_str(dtable.shape()));
  int64_t vocab = dtable.dim(0), d = dtable.dim(1), n = ids.numel();
  check_shape(dy, {n, d}, "embedding_backward: dy");
  MOE_CHECK(dtable.dtype() == DType::kF32 && ids.dtype() == DType::kI32,
            "embedding_backward: dtable must be f32 and ids i32, found {} {}",
            dtype_name(dtable.dtype()), dtype_name(ids.dtype()));
  if (n * d == 0) return;
  MOE_DISPATCH_ACT(dy.dtype(), "embedding_backward", T, {
    embedding_backward_kernel<T><<<static_cast<unsigned>(ceil_div(d, 128)), 128, 0, stream_>>>(
        dtable.ptr<float>(), static_cast<const T*>(dy.data()), ids.ptr<int32_t>(), n, d, vocab);
    MOE_LAUNCH_CHECK("embedding_backward_kernel");
  });
  after_op("embedding_backward");
}

}  // namespace moe
