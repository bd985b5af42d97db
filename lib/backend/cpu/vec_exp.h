// exp over arrays for the CPU backend's softmax and SiLU loops.
//
// glibc's expf does not vectorise without -ffast-math, and a clamped polynomial written in plain
// C++ does not either (GCC will not if-convert the clamp under -ftrapping-math), so the float
// version is written with AVX2/FMA intrinsics, 8 lanes at a time, with a scalar path that performs
// the very same operations (explicit fma, nearbyint) for the tail: every element gets the same
// bits whether it lands in a vector or in the tail, so results never depend on how a caller splits
// its arrays. Builds without AVX2 use the scalar path only.
//
// Method (Cephes expf): clamp x to [-87, 88] (the result is then always a finite normal number;
// NaN passes through), n = round(x / ln 2), r = x - n ln 2 in two parts (Cody-Waite), e^r by a
// degree-7 polynomial, times 2^n built in the exponent bits. Relative error below 2e-7 (~2 ulp).
// The double version is std::exp: the finite-difference tests run in double at full precision.
// Internal to lib/ (compiled with -march=x86-64-v3): tests check it through the ops that use it.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MOE_CPU_EXP_AVX2 1
#endif

namespace moe::cpu {

namespace exp_detail {
constexpr float kLo = -87.0f, kHi = 88.0f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
}  // namespace exp_detail

inline float exp_scalar(float x) {
  using namespace exp_detail;
  if (std::isnan(x)) return x;
  x = x < kLo ? kLo : (x > kHi ? kHi : x);
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(-n, kLn2Hi, x);
  r = std::fma(-n, kLn2Lo, r);
  float p = std::fma(kP0, r, kP1);
  p = std::fma(p, r, kP2);
  p = std::fma(p, r, kP3);
  p = std::fma(p, r, kP4);
  p = std::fma(p, r, kP5);
  const float rr = r * r;
  float e = std::fma(p, rr, r);
  e = e + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return e * scale;
}

#ifdef MOE_CPU_EXP_AVX2
inline __m256 exp_avx2(__m256 x) {
  using namespace exp_detail;
  // max/min return their second operand when either is NaN: x second keeps NaN.
  x = _mm256_min_ps(_mm256_set1_ps(kHi), _mm256_max_ps(_mm256_set1_ps(kLo), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kP0), r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  const __m256 rr = _mm256_mul_ps(r, r);
  __m256 e = _mm256_fmadd_ps(p, rr, r);
  e = _mm256_add_ps(e, _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
}
#endif

// y[i] = exp(x[i]) for i < n; y may alias x.
inline void exp_array(float* y, const float* x, int64_t n) {
  int64_t i = 0;
#ifdef MOE_CPU_EXP_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp_avx2(_mm256_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) y[i] = exp_scalar(x[i]);
}
inline void exp_array(double* y, const double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

}  // namespace moe::cpu
