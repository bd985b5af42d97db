// RMSNorm: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps), one CTA per row.
//
// Backward: dx_i = rstd * w_i * dy_i - x_i * rstd^3 * (1/C) * sum_j dy_j w_j x_j (row-local), and
// dw_c += sum_t dy_tc x_tc rstd_t, a column reduction over all rows. The latter is two-pass for
// determinism: fixed row chunks write partial column sums to scratch, then one pass adds the
// partials in chunk order.
#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

constexpr int kNormThreads = 256;
constexpr int kDwChunks = 64;  // row chunks of the dw reduction (fixed: order independent of N)

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    rms_forward_kernel(T* y, float* rstd, const T* x, const T* w, int64_t cols, float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * cols;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = to_f(xr[c]);
    ss += v * v;
  }
  float total = block_sum_all<kNormThreads>(ss);
  float r = 1.0f / sqrtf(total / float(cols) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  T* yr = y + row * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    yr[c] = from_f<T>(to_f(xr[c]) * r * to_f(w[c]));
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    rms_backward_dx_kernel(T* dx, const T* dy, const T* x, const T* w, const float* rstd,
                           int64_t cols, bool accumulate) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * cols;
  const T* dyr = dy + row * cols;
  float dot = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    dot += to_f(dyr[c]) * to_f(w[c]) * to_f(xr[c]);
  float total = block_sum_all<kNormThreads>(dot);
  float r = rstd[row];
  float coef = r * r * r * total / float(cols);
  T* dxr = dx + row * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float g = r * to_f(w[c]) * to_f(dyr[c]) - to_f(xr[c]) * coef;
    dxr[c] = from_f<T>(accumulate ? to_f(dxr[c]) + g : g);
  }
}

// partial[chunk][c] = sum over rows of the chunk of dy * x * rstd.
template <typename T>
__global__ void rms_dw_partial_kernel(float* partial, const T* dy, const T* x, const float* rstd,
                                      int64_t rows, int64_t cols) {
  int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  int64_t chunk = (rows + gridDim.y - 1) / gridDim.y;
  int64_t begin = blockIdx.y * chunk, end = min(rows, begin + chunk);
  float acc = 0.0f;
  for (int64_t t = begin; t < end; ++t) acc += to_f(dy[t * cols + c]) * to_f(x[t * cols + c]) * rstd[t];
  partial[blockIdx.y * cols + c] = acc;
}

__global__ void rms_dw_finish_kernel(float* dw, const float* partial, int chunks, int64_t cols) {
  int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  float acc = 0.0f;
  for (int p = 0; p < chunks; ++p) acc += partial[p * cols + c];
  dw[c] += acc;
}

}  // namespace

void CudaBackend::rms_norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w,
                                   float eps) {
  MOE_CHECK(w.ndim() == 1, "rms_norm_forward: w expected [C], found {}", shape_str(w.shape()));
  int64_t cols = w.dim(0), rows = cols > 0 ? x.numel() / cols : 0;
  check_shape(x, {rows, cols}, "rms_norm_forward: x");
  check_shape(y, {rows, cols}, "rms_norm_forward: y");
  check_shape(rstd, {rows}, "rms_norm_forward: rstd");
  MOE_CHECK(y.dtype() == x.dtype() && w.dtype() == x.dtype() && rstd.dtype() == DType::kF32,
            "rms_norm_forward: y, x, w must share a dtype and rstd be f32, found {} {} {} {}",
            dtype_name(y.dtype()), dtype_name(x.dtype()), dtype_name(w.dtype()),
            dtype_name(rstd.dtype()));
  if (rows == 0) return;
  MOE_DISPATCH_ACT(x.dtype(), "rms_norm_forward", T, {
    rms_forward_kernel<T><<<static_cast<unsigned>(rows), kNormThreads, 0, stream_>>>(
        static_cast<T*>(y.data()), rstd.ptr<float>(), static_cast<const T*>(x.data()),
        static_cast<const T*>(w.data()), cols, eps);
    MOE_LAUNCH_CHECK("rms_forward_kernel");
  });
  after_op("rms_norm_forward");
}

void CudaBackend::rms_norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                                    const Tensor& w, const Tensor& rstd, bool accumulate_dx) {
  MOE_CHECK(w.ndim() == 1, "rms_norm_backward: w expected [C], found {}", shape_str(w.shape()));
  int64_t cols = w.dim(0), rows = cols > 0 ? x.numel() / cols : 0;
  check_shape(x, {rows, cols}, "rms_norm_backward: x");
  check_shape(dy, {rows, cols}, "rms_norm_backward: dy");
  check_shape(rstd, {rows}, "rms_norm_backward: rstd");
  MOE_CHECK(dy.dtype() == x.dtype() && w.dtype() == x.dtype() && rstd.dtype() == DType::kF32,
            "rms_norm_backward: dy, x, w must share a dtype and rstd be f32");
  if (rows == 0) return;
  MOE_DISPATCH_ACT(x.dtype(), "rms_norm_backward", T, {
    if (dx.defined()) {
      check_shape(dx, {rows, cols}, "rms_norm_backward: dx");
      MOE_CHECK(dx.dtype() == x.dtype(), "rms_norm_backward: dx must be {}, found {}",
                dtype_name(x.dtype()), dtype_name(dx.dtype()));
      rms_backward_dx_kernel<T><<<static_cast<unsigned>(rows), kNormThreads, 0, stream_>>>(
          static_cast<T*>(dx.data()), static_cast<const T*>(dy.data()),
          static_cast<const T*>(x.data()), static_cast<const T*>(w.data()), rstd.ptr<float>(),
          cols, accumulate_dx);
      MOE_LAUNCH_CHECK("rms_backward_dx_kernel");
    }
    if (dw.defined()) {
      check_shape(dw, {cols}, "rms_norm_backward: dw");
      MOE_CHECK(dw.dtype() == DType::kF32, "rms_norm_backward: dw must be f32, found {}",
                dtype_name(dw.dtype()));
      float* partial = static_cast<float*>(scratch(kScratchA, sizeof(float) * kDwChunks * cols));
      dim3 grid(static_cast<unsigned>(ceil_div(cols, kBlock)), kDwChunks);
      rms_dw_partial_kernel<T><<<grid, kBlock, 0, stream_>>>(
          partial, static_cast<const T*>(dy.data()), static_cast<const T*>(x.data()),
          rstd.ptr<float>(), rows, cols);
      MOE_LAUNCH_CHECK("rms_dw_partial_kernel");
      rms_dw_finish_kernel<<<static_cast<unsigned>(ceil_div(cols, kBlock)), kBlock, 0, stream_>>>(
          dw.ptr<float>(), partial, kDwChunks, cols);
      MOE_LAUNCH_CHECK("rms_dw_finish_kernel");
    }
  });
  after_op("rms_norm_backward");
}

}  // namespace moe
