// CpuBackend: construction, op support, host memory, copies and the elementwise ops
// (fill, convert, add, axpy, scale). The other op families live in their own files (see
// cpu_backend.h).
//
// Memory is 64-byte aligned (one cache line, a full AVX-512 vector) and owned by a shared_ptr
// whose deleter frees it, so views keep their storage alive. Elementwise loops are split
// statically over OpenMP threads; each element is independent, so the thread count never
// changes a result.
#include "backend/cpu/cpu_backend.h"

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/cpu_common.h"
#include "core/checked.h"

namespace moe {
namespace cpu {

// OpenBLAS (the pthread build) keeps its own worker threads, which spin after each call. Mixing
// them with OpenMP regions on a small machine is ruinous: on 2 cores the attention backward
// test ran 190x slower (34 s instead of 0.18 s) with OpenBLAS at 2 threads than at 1. So BLAS
// stays at one thread and every op splits its work into fixed blocks over OpenMP threads, each
// block one single-threaded GEMM. Fixed blocks also make the numbers independent of the thread
// count.
void use_single_threaded_blas() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

}  // namespace cpu

using cpu::check_cpu;
using cpu::dispatch_float;

CpuBackend::CpuBackend(int threads) {
  MOE_CHECK(threads >= 0, "cpu backend: thread count must be >= 0 (0 = all cores), found {}",
            threads);
  threads_ = threads > 0 ? threads : omp_get_max_threads();
  cpu::use_single_threaded_blas();
}

bool CpuBackend::supports(OpKind op, DType dtype) const {
  switch (dtype) {
    case DType::kF32:
    case DType::kF64: return true;
    case DType::kBF16: return op == OpKind::convert || op == OpKind::fill;
    case DType::kI32: return op == OpKind::convert || op == OpKind::fill;
  }
  return false;
}

Tensor CpuBackend::empty(const Shape& shape, DType dtype) {
  // Shapes come from config and file sizes: the count and the padded byte size are exact or the
  // allocation is refused (a wrapped size would allocate a small block and write past it).
  const std::string what = "cpu backend: allocating shape " + shape_str(shape);
  const int64_t n = checked_numel(shape, what);
  constexpr size_t kAlign = 64;
  const size_t bytes = checked_mul<size_t>(static_cast<size_t>(n), dtype_size(dtype), what);
  size_t padded = (checked_add<size_t>(bytes, kAlign - 1, what) / kAlign) * kAlign;
  if (padded == 0) padded = kAlign;  // a defined tensor always has storage, even with 0 elements
  void* p = std::aligned_alloc(kAlign, padded);
  MOE_CHECK(p != nullptr, "cpu backend: out of host memory allocating {} bytes for shape {} {}",
            padded, shape_str(shape), dtype_name(dtype));
  std::shared_ptr<void> storage(p, [](void* q) { std::free(q); });
  return Tensor(std::move(storage), p, shape, dtype, Device::kCpu);
}

void CpuBackend::upload(Tensor& dst, const void* host, size_t bytes) {
  check_cpu(dst, "upload", "dst");
  MOE_CHECK(bytes == dst.nbytes(), "upload: {} bytes into a tensor of {} bytes ({} {})", bytes,
            dst.nbytes(), shape_str(dst.shape()), dtype_name(dst.dtype()));
  if (bytes) std::memcpy(dst.data(), host, bytes);
}

void CpuBackend::download(void* host, const Tensor& src, size_t bytes) {
  check_cpu(src, "download", "src");
  MOE_CHECK(bytes == src.nbytes(), "download: {} bytes from a tensor of {} bytes ({} {})", bytes,
            src.nbytes(), shape_str(src.shape()), dtype_name(src.dtype()));
  if (bytes) std::memcpy(host, src.data(), bytes);
}

void CpuBackend::copy(Tensor& dst, const Tensor& src) {
  check_cpu(dst, "copy", "dst");
  check_cpu(src, "copy", "src");
  MOE_CHECK(dst.dtype() == src.dtype(), "copy: dtype {} into {}", dtype_name(src.dtype()),
            dtype_name(dst.dtype()));
  MOE_CHECK(dst.numel() == src.numel(), "copy: {} elements ({}) into {} elements ({})",
            src.numel(), shape_str(src.shape()), dst.numel(), shape_str(dst.shape()));
  if (dst.data() != src.data() && src.nbytes()) std::memmove(dst.data(), src.data(), src.nbytes());
}

void CpuBackend::synchronize() {}  // host ops complete before they return

namespace {

template <typename T> void fill_typed(T* y, int64_t n, T value, int threads) {
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads, n))
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

// Reads element i of a tensor of any floating or integer dtype as double.
double load_as_double(const Tensor& x, int64_t i) {
  switch (x.dtype()) {
    case DType::kF32: return static_cast<const float*>(x.data())[i];
    case DType::kF64: return static_cast<const double*>(x.data())[i];
    case DType::kBF16: return cpu::float_from_bf16(static_cast<const uint16_t*>(x.data())[i]);
    case DType::kI32: return static_cast<const int32_t*>(x.data())[i];
  }
  return 0.0;
}

// f64 -> bf16 in one correct rounding: the f64 -> f32 step rounds to odd (truncate, then set
// the last bit when inexact), which keeps a later round-to-nearest-even to 8 bits exact.
uint16_t bf16_from_double(double value) {
  float f = static_cast<float>(value);
  if (std::isfinite(f) && static_cast<double>(f) != value) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if (std::fabs(static_cast<double>(f)) > std::fabs(value)) bits -= 1;  // toward zero
    bits |= 1u;
    std::memcpy(&f, &bits, 4);
  }
  return cpu::bf16_from_float(f);
}

// Writes element i of a floating tensor (i32 outputs are only filled from i32, see convert).
void store_from_double(Tensor& y, int64_t i, double value) {
  switch (y.dtype()) {
    case DType::kF32: static_cast<float*>(y.data())[i] = static_cast<float>(value); return;
    case DType::kF64: static_cast<double*>(y.data())[i] = value; return;
    case DType::kBF16: static_cast<uint16_t*>(y.data())[i] = bf16_from_double(value); return;
    case DType::kI32: static_cast<int32_t*>(y.data())[i] = static_cast<int32_t>(value); return;
  }
}

}  // namespace

void CpuBackend::fill(Tensor& y, double value) {
  check_cpu(y, "fill", "y");
  int64_t n = y.numel();
  switch (y.dtype()) {
    case DType::kF32: fill_typed(y.ptr<float>(), n, static_cast<float>(value), threads_); return;
    case DType::kF64: fill_typed(y.ptr<double>(), n, value, threads_); return;
    case DType::kI32:
      fill_typed(y.ptr<int32_t>(), n, static_cast<int32_t>(value), threads_);
      return;
    case DType::kBF16:
      fill_typed(static_cast<uint16_t*>(y.data()), n,
                 cpu::bf16_from_float(static_cast<float>(value)), threads_);
      return;
  }
}

void CpuBackend::convert(Tensor& y, const Tensor& x) {
  check_cpu(y, "convert", "y");
  check_cpu(x, "convert", "x");
  MOE_CHECK(y.numel() == x.numel(), "convert: {} elements ({}) into {} elements ({})", x.numel(),
            shape_str(x.shape()), y.numel(), shape_str(y.shape()));
  MOE_CHECK(y.data() != x.data() || y.dtype() == x.dtype(),
            "convert: y and x must not share memory when the dtypes differ");
  MOE_CHECK(y.dtype() != DType::kI32 || x.dtype() == DType::kI32,
            "convert: {} to i32 is not supported (it would need a rounding rule); convert i32 "
            "to floating types only", dtype_name(x.dtype()));
  int64_t n = x.numel();
  if (x.dtype() == DType::kF32 && y.dtype() == DType::kBF16) {  // the hot path of mixed precision
    const float* src = x.ptr<float>();
    uint16_t* dst = static_cast<uint16_t*>(y.data());
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t i = 0; i < n; ++i) dst[i] = cpu::bf16_from_float(src[i]);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
  for (int64_t i = 0; i < n; ++i) store_from_double(y, i, load_as_double(x, i));
}

void CpuBackend::add(Tensor& y, const Tensor& a, const Tensor& b) {
  check_cpu(a, "add", "a");
  cpu::check_dtype(y, a.dtype(), "add", "y");
  cpu::check_dtype(b, a.dtype(), "add", "b");
  MOE_CHECK(y.numel() == a.numel() && b.numel() == a.numel(),
            "add: element counts differ: y {}, a {}, b {}", shape_str(y.shape()),
            shape_str(a.shape()), shape_str(b.shape()));
  dispatch_float(a.dtype(), "add", [&](auto tag) {
    using T = decltype(tag);
    T* py = y.ptr<T>();
    const T* pa = a.ptr<T>();
    const T* pb = b.ptr<T>();
    int64_t n = a.numel();
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t i = 0; i < n; ++i) py[i] = pa[i] + pb[i];
  });
}

void CpuBackend::axpy(Tensor& y, const Tensor& x, float alpha) {
  check_cpu(x, "axpy", "x");
  cpu::check_dtype(y, x.dtype(), "axpy", "y");
  MOE_CHECK(y.numel() == x.numel(), "axpy: element counts differ: y {}, x {}",
            shape_str(y.shape()), shape_str(x.shape()));
  dispatch_float(x.dtype(), "axpy", [&](auto tag) {
    using T = decltype(tag);
    T* py = y.ptr<T>();
    const T* px = x.ptr<T>();
    T a = static_cast<T>(alpha);
    int64_t n = x.numel();
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t i = 0; i < n; ++i) py[i] += a * px[i];
  });
}

void CpuBackend::scale(Tensor& y, float alpha) {
  check_cpu(y, "scale", "y");
  dispatch_float(y.dtype(), "scale", [&](auto tag) {
    using T = decltype(tag);
    T* py = y.ptr<T>();
    T a = static_cast<T>(alpha);
    int64_t n = y.numel();
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t i = 0; i < n; ++i) py[i] *= a;
  });
}

}  // namespace moe
