// Harness of the CUDA-vs-CPU op tests: paired tensors (the CPU reference in f32, the CUDA tensor
// in the dtype under test), random non-zero inputs, NaN-poisoned outputs, and comparisons with
// documented tolerances.
//
// For a bf16 test, inputs are rounded to bf16 on the host first and the CPU reference computes in
// f32 on exactly those values, so the comparison measures only the CUDA kernel's own error
// (bf16 rounding of its outputs and fp32 summation order).
//
// Tolerances (|gpu - cpu| <= atol + rtol * |cpu|):
//   f32:  atol 2e-4, rtol 1e-3  (fp32 with different summation orders and libm)
//   bf16: atol 3e-2, rtol 3e-2  (outputs rounded to bf16: 8 mantissa bits, rel. step 7.8e-3,
//                                plus bf16 intermediates such as attention's saved output),
// and every tensor within a relative L2 error (1e-2 for bf16 outputs, 1e-4 for f32 ones: catches
// errors in small values that atol would let through).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"

namespace moe::test {

struct Tolerance {
  double atol, rtol;
};
// Relative L2 bounds over a whole tensor, by the CUDA tensor's dtype, checked on top of the
// element bound: bf16 output rounding alone gives ~1e-3, fp32 summation order ~1e-6.
constexpr double kBf16RelL2 = 1e-2, kF32RelL2 = 1e-4;
inline Tolerance tolerance_for(DType dtype) {
  return dtype == DType::kBF16 ? Tolerance{3e-2, 3e-2} : Tolerance{2e-4, 1e-3};
}

inline float round_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  bits = (bits + rounding) & 0xffff0000u;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// A value on both backends: `cpu` is f32, `gpu` has the dtype under test.
struct Pair {
  Tensor cpu, gpu;
};

class OpHarness {
 public:
  OpHarness(Backend& cpu, Backend& gpu, DType act, uint32_t seed)
      : cpu_(cpu), gpu_(gpu), act_(act), rng_(seed) {}
  DType act() const { return act_; }
  Backend& cpu() { return cpu_; }
  Backend& gpu() { return gpu_; }

  // Uniform in +-[lo, hi] with a random sign: never zero.
  std::vector<float> random(int64_t n, float lo = 0.1f, float hi = 1.0f) {
    std::uniform_real_distribution<float> mag(lo, hi);
    std::bernoulli_distribution sign(0.5);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = sign(rng_) ? mag(rng_) : -mag(rng_);
    return v;
  }
  std::mt19937& rng() { return rng_; }

  // A tensor from host values; `dtype` is the CUDA dtype (the CPU copy is always f32).
  Pair from_values(const Shape& shape, std::vector<float> values, DType dtype) {
    if (dtype == DType::kBF16)
      for (float& x : values) x = round_to_bf16(x);
    Pair p{cpu_.empty(shape, DType::kF32), gpu_.empty(shape, dtype)};
    cpu_.upload_vec(p.cpu, values);
    if (dtype == DType::kF32) {
      gpu_.upload_vec(p.gpu, values);
    } else {
      Tensor staging = gpu_.empty(shape, DType::kF32);
      gpu_.upload_vec(staging, values);
      gpu_.convert(p.gpu, staging);
    }
    return p;
  }
  Pair act_input(const Shape& shape, float lo = 0.1f, float hi = 1.0f) {
    return from_values(shape, random(numel(shape), lo, hi), act_);
  }
  Pair f32_input(const Shape& shape, float lo = 0.1f, float hi = 1.0f) {
    return from_values(shape, random(numel(shape), lo, hi), DType::kF32);
  }
  Pair i32_input(const Shape& shape, const std::vector<int32_t>& values) {
    Pair p{cpu_.empty(shape, DType::kI32), gpu_.empty(shape, DType::kI32)};
    cpu_.upload_vec(p.cpu, values);
    gpu_.upload_vec(p.gpu, values);
    return p;
  }
  // An overwritten output: NaN on the GPU so an element the kernel forgets fails the comparison.
  Pair output(const Shape& shape, DType dtype) {
    Pair p{cpu_.empty(shape, DType::kF32), gpu_.empty(shape, dtype)};
    cpu_.fill(p.cpu, 0.0);
    gpu_.fill(p.gpu, std::numeric_limits<double>::quiet_NaN());
    return p;
  }
  Pair i32_output(const Shape& shape) {
    Pair p{cpu_.empty(shape, DType::kI32), gpu_.empty(shape, DType::kI32)};
    cpu_.fill(p.cpu, 0.0);
    gpu_.fill(p.gpu, -7777.0);  // an impossible index or offset
    return p;
  }
  // An accumulated output (+=): the same random starting values on both sides.
  Pair accumulator(const Shape& shape, DType dtype) {
    return from_values(shape, random(numel(shape)), dtype);
  }

  // A CPU f32 result re-used as a GPU input (e.g. a forward output fed to a backward pass).
  Pair share(const Tensor& cpu_value, DType dtype) {
    return from_values(cpu_value.shape(), cpu_.download_vec<float>(cpu_value), dtype);
  }

  std::vector<float> gpu_values(const Tensor& t) {
    if (t.dtype() == DType::kF32) return gpu_.download_vec<float>(t);
    Tensor f = gpu_.empty(t.shape(), DType::kF32);
    gpu_.convert(f, t);
    return gpu_.download_vec<float>(f);
  }

  // Every element within tolerance (NaN fails); reports the worst few.
  void expect_close(const Pair& p, const std::string& what, Tolerance tol) {
    std::vector<float> ref = cpu_.download_vec<float>(p.cpu);
    std::vector<float> got = gpu_values(p.gpu);
    ASSERT_EQ(ref.size(), got.size()) << what;
    int failures = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      double diff = std::fabs(double(got[i]) - double(ref[i]));
      bool ok = std::isfinite(got[i]) && diff <= tol.atol + tol.rtol * std::fabs(double(ref[i]));
      if (!ok && ++failures <= 5)
        ADD_FAILURE() << what << "[" << i << "]: cuda " << got[i] << " vs cpu " << ref[i]
                      << " (|diff| " << diff << ", atol " << tol.atol << ", rtol " << tol.rtol
                      << ", dtype " << dtype_name(p.gpu.dtype()) << ")";
    }
    EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << ref.size()
                           << " elements out of tolerance";
    // The element bound's atol is loose wherever the values are small (softmax gradients,
    // long-sequence attention), so the whole tensor must also agree in relative L2.
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double d = double(got[i]) - double(ref[i]);
      num += d * d;
      den += double(ref[i]) * double(ref[i]);
    }
    const double rel_l2 = std::sqrt(num / std::max(den, 1e-30));
    const double bound = p.gpu.dtype() == DType::kBF16 ? kBf16RelL2 : kF32RelL2;
    EXPECT_LE(rel_l2, bound) << what << ": relative L2 error of the " << dtype_name(p.gpu.dtype())
                             << " tensor";
  }
  void expect_close(const Pair& p, const std::string& what) {
    expect_close(p, what, tolerance_for(p.gpu.dtype()));
  }
  void expect_equal_i32(const Pair& p, const std::string& what) {
    std::vector<int32_t> ref = cpu_.download_vec<int32_t>(p.cpu);
    std::vector<int32_t> got = gpu_.download_vec<int32_t>(p.gpu);
    ASSERT_EQ(ref, got) << what << " differs between cuda and cpu";
  }

  static int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
  }

 private:
  Backend& cpu_;
  Backend& gpu_;
  DType act_;
  std::mt19937 rng_;
};

}  // namespace moe::test
