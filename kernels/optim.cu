// AdamW on fp32 master weights (refreshing the bf16 compute copy in the same pass; the update
// formula is lib/math/scalar.h, shared with the CPU backend) and the
// squared global gradient norm, summed in double with the deterministic two-pass reduction.
#include <cmath>
#include <initializer_list>

#include "cuda_backend.h"
#include "math/scalar.h"

namespace moe {
using namespace cuda;

namespace {

// The per-coordinate update is math::adamw_update, the same function the CPU backend uses.
template <typename L>
__global__ void adamw_kernel(float* param, float* m, float* v, L* lowp, const float* grad,
                             int64_t n, math::AdamWCoef<float> c) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float p = param[i], mi = m[i], vi = v[i];
    math::adamw_update(p, mi, vi, grad[i], c);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
    if (lowp != nullptr) lowp[i] = from_f<L>(p);
  }
}

template <typename G> struct SquareTerm {
  const G* grad;
  __device__ double operator()(int64_t i) const {
    const double g = to_f(grad[i]);
    return g * g;
  }
};

}  // namespace

void CudaBackend::adamw_step(Tensor& param, Tensor& m, Tensor& v, Tensor& param_lowp,
                             const Tensor& grad, const AdamWParams& hp) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&m, &v, &grad})
    MOE_CHECK(t->numel() == param.numel() && t->dtype() == DType::kF32,
              "adamw_step: param, m, v and grad must be f32 of {} elements, found {} {}",
              param.numel(), dtype_name(t->dtype()), shape_str(t->shape()));
  MOE_CHECK(param.dtype() == DType::kF32, "adamw_step: master weights must be f32, found {}",
            dtype_name(param.dtype()));
  MOE_CHECK(hp.step >= 1, "adamw_step: step is 1-based, found {}", hp.step);
  const int64_t n = param.numel();
  if (n == 0) return;
  const double step = static_cast<double>(hp.step);
  const math::AdamWCoef<float> c{hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay,
                                 hp.grad_scale,
                                 float(1.0 - std::pow(double(hp.beta1), step)),
                                 float(1.0 - std::pow(double(hp.beta2), step))};
  auto launch = [&](auto* lowp) {
    adamw_kernel<<<grid_for(n), kBlock, 0, stream_>>>(
        param.ptr<float>(), m.ptr<float>(), v.ptr<float>(), lowp, grad.ptr<float>(), n, c);
    MOE_LAUNCH_CHECK("adamw_kernel");
  };
  if (!param_lowp.defined()) {
    launch(static_cast<float*>(nullptr));
  } else {
    MOE_CHECK(param_lowp.numel() == n, "adamw_step: param_lowp has {} elements, expected {}",
              param_lowp.numel(), n);
    if (param_lowp.dtype() == DType::kBF16) launch(static_cast<__nv_bfloat16*>(param_lowp.data()));
    else if (param_lowp.dtype() == DType::kF32) launch(param_lowp.ptr<float>());
    else MOE_FAIL("adamw_step: param_lowp must be bf16 or f32, found {}",
                  dtype_name(param_lowp.dtype()));
  }
  after_op("adamw_step");
}

void CudaBackend::global_norm_sq(Tensor& out, const Tensor& grad) {
  check_shape(out, {1}, "global_norm_sq: out");
  MOE_CHECK(out.dtype() == DType::kF32, "global_norm_sq: out must be f32");
  const int64_t n = grad.numel();
  MOE_DISPATCH_ACT(grad.dtype(), "global_norm_sq", G, {
    deterministic_sum(stream_, n, SquareTerm<G>{static_cast<const G*>(grad.data())},
                      sum_partials(), out.ptr<float>(), 1.0, true);
  });
  after_op("global_norm_sq");
}

}  // namespace moe
