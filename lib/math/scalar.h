// Scalar formulas shared by the CPU loops (lib/backend/cpu) and the CUDA kernels (kernels/).
// Each is a MOE_HD inline template so both compilers see one definition of the math; loops,
// launches and memory layout stay per-device.
#pragma once
#include <cmath>

#include "core/hd.h"

namespace moe::math {

// The std overloads for float and double (nvcc provides them in device code too).
using std::exp;
using std::pow;
using std::sqrt;

// SiLU(x) = x * sigmoid(x). Written with exp(-|x|) so neither branch overflows for large |x|.
template <typename T> MOE_HD T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + exp(-x));
  T e = exp(x);
  return e / (T(1) + e);
}
template <typename T> MOE_HD T silu(T x) { return x * sigmoid(x); }
// d silu / dx = s + x s (1 - s), s = sigmoid(x)
template <typename T> MOE_HD T silu_grad(T x) {
  T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

// The same two formulas from a precomputed s = sigmoid(x), for loops that compute the sigmoid
// once with their own exp.
template <typename T> MOE_HD T silu_from_sigmoid(T x, T s) { return x * s; }
template <typename T> MOE_HD T silu_grad_from_sigmoid(T x, T s) {
  return s * (T(1) + x * (T(1) - s));
}

// RoPE angle of position `pos` for pair index i in [0, head_dim/2):
// pos * theta^(-2i/head_dim), the Hugging Face Llama inv_freq. Computed in double on the host
// (CUDA callers pass float and accept the rounding of powf).
template <typename T> MOE_HD T rope_inv_freq(int i, int head_dim, T theta) {
  return pow(theta, -T(2) * T(i) / T(head_dim));
}
template <typename T> MOE_HD T rope_angle(int pos, int i, int head_dim, T theta) {
  return T(pos) * rope_inv_freq<T>(i, head_dim, theta);
}

// One AdamW coordinate, as torch.optim.AdamW: the gradient is first multiplied by grad_scale,
// then decoupled weight decay p -= lr * wd * p, then the bias-corrected Adam update.
// bc1 = 1 - beta1^step, bc2 = 1 - beta2^step (computed once per call by the caller).
template <typename T> struct AdamWCoef {
  T lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2;
};
template <typename T> MOE_HD void adamw_update(T& p, T& m, T& v, T g, const AdamWCoef<T>& c) {
  g *= c.grad_scale;
  p -= c.lr * c.weight_decay * p;
  m = c.beta1 * m + (T(1) - c.beta1) * g;
  v = c.beta2 * v + (T(1) - c.beta2) * g * g;
  T m_hat = m / c.bc1;
  T v_hat = v / c.bc2;
  p -= c.lr * m_hat / (sqrt(v_hat) + c.eps);
}

}  // namespace moe::math
