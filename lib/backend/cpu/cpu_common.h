// Helpers shared by the CpuBackend op files: dtype dispatch, argument checks, bf16 bit
// conversion and the OpenBLAS thread-count switch. Internal to lib/backend/cpu.
#pragma once
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "core/tensor.h"

extern "C" void openblas_set_num_threads(int num_threads);  // also in OpenBLAS's cblas.h

namespace moe::cpu {

// Calls f(T{}) with T = float or double according to `dtype`; anything else is an error naming
// the op. Usage: dispatch_float(x.dtype(), "op", [&](auto tag) { using T = decltype(tag); ... });
template <typename F> void dispatch_float(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::kF32: f(float{}); return;
    case DType::kF64: f(double{}); return;
    default:
      MOE_FAIL("{}: the CPU backend computes in f32 or f64, found {}", op, dtype_name(dtype));
  }
}

inline void check_cpu(const Tensor& t, const char* op, const char* name) {
  MOE_CHECK(t.defined(), "{}: tensor '{}' is undefined", op, name);
  MOE_CHECK(t.device() == Device::kCpu, "{}: tensor '{}' is not in host memory", op, name);
}

// Every floating-point tensor of one CPU call shares one dtype (see backend.h).
inline void check_dtype(const Tensor& t, DType dtype, const char* op, const char* name) {
  check_cpu(t, op, name);
  MOE_CHECK(t.dtype() == dtype, "{}: tensor '{}' has dtype {}, expected {}", op, name,
            dtype_name(t.dtype()), dtype_name(dtype));
}

inline void check_shape_of(const Tensor& t, const Shape& expected, const char* op,
                           const char* name) {
  MOE_CHECK(t.shape() == expected, "{}: tensor '{}' has shape {}, expected {}", op, name,
            shape_str(t.shape()), shape_str(expected));
}

// Dtype and shape at once, the usual check of an op's operand.
inline void check_operand(const Tensor& t, DType dtype, const Shape& shape, const char* op,
                          const char* name) {
  check_dtype(t, dtype, op, name);
  check_shape_of(t, shape, op, name);
}

inline void check_rank(const Tensor& t, int rank, const char* op, const char* name) {
  MOE_CHECK(t.ndim() == rank, "{}: tensor '{}' has shape {}, expected rank {}", op, name,
            shape_str(t.shape()), rank);
}

// bf16 <-> f32 by bit manipulation. f32 -> bf16 rounds to nearest, ties to even; NaN stays a
// quiet NaN with its sign.
inline uint16_t bf16_from_float(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}
inline float float_from_bf16(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}


// Thread count for a parallel loop over `work` independent elements: below kMinParallelWork a
// single thread is faster than waking (and on a loaded 2-core machine, waiting for) a team.
// Elements are independent, so this never changes a result.
constexpr int64_t kMinParallelWork = 1 << 15;
inline int team(int threads, int64_t work) { return work >= kMinParallelWork ? threads : 1; }

// OpenBLAS runs single-threaded; the CPU backend parallelises with OpenMP itself, calling one
// single-threaded GEMM per block of rows (see cpu_backend.cpp for why). Called by the
// constructor; idempotent.
void use_single_threaded_blas();

}  // namespace moe::cpu
