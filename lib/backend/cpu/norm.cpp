// CpuBackend RMSNorm: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps) per row.
//
// Backward, per row with r = rstd and c = sum_j dy_j w_j x_j:
//   dx_i = r w_i dy_i - (r^3 / C) x_i c          dw_i += sum_rows dy_i x_i r
// Row statistics are summed in double. dx is parallel over rows; dw is parallel over column
// blocks, each walking the rows in order, so both are independent of the thread count.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace moe {
namespace {

template <typename T>
void rms_norm_forward_impl(T* y, T* rstd, const T* x, const T* w, int64_t rows, int64_t cols,
                           double eps, int threads) {
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads, rows * cols))
  for (int64_t n = 0; n < rows; ++n) {
    const T* xr = x + n * cols;
    double ss = 0.0;
    for (int64_t c = 0; c < cols; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const T r = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(cols) + eps));
    rstd[n] = r;
    T* yr = y + n * cols;
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * r * w[c];
  }
}

template <typename T>
void rms_norm_dx(T* dx, const T* dy, const T* x, const T* w, const T* rstd, int64_t rows,
                 int64_t cols, bool accumulate, int threads) {
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads, rows * cols))
  for (int64_t n = 0; n < rows; ++n) {
    const T* xr = x + n * cols;
    const T* dyr = dy + n * cols;
    double dot = 0.0;
    for (int64_t c = 0; c < cols; ++c) dot += static_cast<double>(dyr[c]) * w[c] * xr[c];
    const T r = rstd[n];
    const T coef = static_cast<T>(static_cast<double>(r) * r * r * dot / static_cast<double>(cols));
    T* dxr = dx + n * cols;
    if (accumulate) {
      for (int64_t c = 0; c < cols; ++c) dxr[c] += r * w[c] * dyr[c] - coef * xr[c];
    } else {
      for (int64_t c = 0; c < cols; ++c) dxr[c] = r * w[c] * dyr[c] - coef * xr[c];
    }
  }
}

template <typename T>
void rms_norm_dw(T* dw, const T* dy, const T* x, const T* rstd, int64_t rows, int64_t cols,
                 int threads) {
  const int64_t block = std::max<int64_t>(16, (cols + threads - 1) / threads);
  const int64_t n_blocks = (cols + block - 1) / block;
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads, rows * cols))
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t c0 = b * block, c1 = std::min(cols, c0 + block);
    for (int64_t n = 0; n < rows; ++n) {
      const T r = rstd[n];
      const T* xr = x + n * cols;
      const T* dyr = dy + n * cols;
      for (int64_t c = c0; c < c1; ++c) dw[c] += dyr[c] * xr[c] * r;
    }
  }
}

}  // namespace

void CpuBackend::rms_norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w,
                                  float eps) {
  const char* op = "rms_norm_forward";
  cpu::check_cpu(x, op, "x");
  cpu::check_rank(x, 2, op, "x");
  const int64_t rows = x.dim(0), cols = x.dim(1);
  cpu::check_operand(y, x.dtype(), x.shape(), op, "y");
  cpu::check_operand(rstd, x.dtype(), {rows}, op, "rstd");
  cpu::check_operand(w, x.dtype(), {cols}, op, "w");
  MOE_CHECK(eps >= 0.0f, "{}: eps must be >= 0, found {}", op, eps);
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    rms_norm_forward_impl(y.ptr<T>(), rstd.ptr<T>(), x.ptr<T>(), w.ptr<T>(), rows, cols,
                          static_cast<double>(eps), threads_);
  });
}

void CpuBackend::rms_norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                                   const Tensor& w, const Tensor& rstd, bool accumulate_dx) {
  const char* op = "rms_norm_backward";
  cpu::check_cpu(x, op, "x");
  cpu::check_rank(x, 2, op, "x");
  const int64_t rows = x.dim(0), cols = x.dim(1);
  const DType dt = x.dtype();
  cpu::check_operand(dx, dt, x.shape(), op, "dx");
  cpu::check_operand(dy, dt, x.shape(), op, "dy");
  cpu::check_operand(w, dt, {cols}, op, "w");
  cpu::check_operand(dw, dt, {cols}, op, "dw");
  cpu::check_operand(rstd, dt, {rows}, op, "rstd");
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    rms_norm_dx(dx.ptr<T>(), dy.ptr<T>(), x.ptr<T>(), w.ptr<T>(), rstd.ptr<T>(), rows, cols,
                accumulate_dx, threads_);
    rms_norm_dw(dw.ptr<T>(), dy.ptr<T>(), x.ptr<T>(), rstd.ptr<T>(), rows, cols, threads_);
  });
}

}  // namespace moe
