// AdamW on fp32 master weights (refreshing the bf16 compute copy in the same pass) and the
// squared global gradient norm, summed in double with the deterministic two-pass reduction.
#include <cmath>
#include <initializer_list>

#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

template <typename L>
__global__ void adamw_kernel(float* param, float* m, float* v, L* lowp, const float* grad,
                             int64_t n, float lr, float beta1, float beta2, float eps, float wd,
                             float bc1, float bc2, float grad_scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grad[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float update = (mi / bc1) / (sqrtf(vi / bc2) + eps);
    float p = param[i];
    p -= lr * wd * p;  // decoupled weight decay on the pre-update weight
    p -= lr * update;
    param[i] = p;
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
  const float bc1 = float(1.0 - std::pow(double(hp.beta1), double(hp.step)));
  const float bc2 = float(1.0 - std::pow(double(hp.beta2), double(hp.step)));
  auto launch = [&](auto* lowp) {
    adamw_kernel<<<grid_for(n), kBlock, 0, stream_>>>(
        param.ptr<float>(), m.ptr<float>(), v.ptr<float>(), lowp, grad.ptr<float>(), n, hp.lr,
        hp.beta1, hp.beta2, hp.eps, hp.weight_decay, bc1, bc2, hp.grad_scale);
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
