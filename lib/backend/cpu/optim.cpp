// CpuBackend optimizer ops: AdamW (the per-coordinate update is math::adamw_update, shared with
// CUDA) and the squared global gradient norm.
//
// global_norm_sq sums in double over fixed blocks of kNormBlock elements (8 lanes within a block,
// which vectorises) and then adds the block sums in block order, so the result does not depend on the thread count. The block sums live in
// a thread_local vector reused across calls (no allocation once it has grown).
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"
#include "backend/cpu/moe_op_checks.h"
#include "math/scalar.h"

namespace moe {
namespace {

constexpr int64_t kNormBlock = 4096;

}  // namespace

void CpuBackend::adamw_step(Tensor& param, Tensor& m, Tensor& v, Tensor& param_lowp,
                            const Tensor& grad, const AdamWParams& hp) {
  const char* op = "adamw_step";
  cpu::check_cpu(param, op, "param");
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&m, "m"}, {&v, "v"},
                         {&grad, "grad"}}) {
    cpu::check_dtype(*t, param.dtype(), op, name);
    MOE_CHECK(t->numel() == param.numel(), "{}: '{}' has shape {}, param has {}", op, name,
              shape_str(t->shape()), shape_str(param.shape()));
  }
  if (param_lowp.defined()) {
    cpu::check_dtype(param_lowp, DType::kBF16, op, "param_lowp");
    MOE_CHECK(param_lowp.numel() == param.numel(), "{}: param_lowp has shape {}, param has {}",
              op, shape_str(param_lowp.shape()), shape_str(param.shape()));
  }
  MOE_CHECK(hp.step >= 1, "{}: step is 1-based, found {}", op, hp.step);
  cpu::dispatch_float(param.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const double step = static_cast<double>(hp.step);
    const math::AdamWCoef<T> c{static_cast<T>(hp.lr),
                               static_cast<T>(hp.beta1),
                               static_cast<T>(hp.beta2),
                               static_cast<T>(hp.eps),
                               static_cast<T>(hp.weight_decay),
                               static_cast<T>(hp.grad_scale),
                               static_cast<T>(1.0 - std::pow(static_cast<double>(hp.beta1), step)),
                               static_cast<T>(1.0 - std::pow(static_cast<double>(hp.beta2), step))};
    T* p = param.ptr<T>();
    T* pm = m.ptr<T>();
    T* pv = v.ptr<T>();
    const T* g = grad.ptr<T>();
    uint16_t* lowp = param_lowp.defined() ? static_cast<uint16_t*>(param_lowp.data()) : nullptr;
    const int64_t n = param.numel();
    // Two branch-free loops (the update vectorises; a branch inside it would stop that).
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t i = 0; i < n; ++i) math::adamw_update(p[i], pm[i], pv[i], g[i], c);
    if (lowp) {
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
      for (int64_t i = 0; i < n; ++i) lowp[i] = cpu::bf16_from_float(static_cast<float>(p[i]));
    }
  });
}

void CpuBackend::global_norm_sq(Tensor& out, const Tensor& grad) {
  const char* op = "global_norm_sq";
  cpu::check_cpu(grad, op, "grad");
  cpu::check_dtype(out, grad.dtype(), op, "out");
  cpu::check_shape_of(out, {1}, op, "out");
  cpu::dispatch_float(grad.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* g = grad.ptr<T>();
    const int64_t n = grad.numel();
    const int64_t n_blocks = (n + kNormBlock - 1) / kNormBlock;
    thread_local std::vector<double> block_sums;
    block_sums.assign(static_cast<size_t>(n_blocks), 0.0);
    double* sums = block_sums.data();
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t end = std::min(n, (b + 1) * kNormBlock);
      sums[b] = cpu::lane_dot(g + b * kNormBlock, g + b * kNormBlock, end - b * kNormBlock);
    }
    double total = 0.0;
    for (int64_t b = 0; b < n_blocks; ++b) total += sums[b];
    T* o = out.ptr<T>();
    o[0] = static_cast<T>(static_cast<double>(o[0]) + total);
  });
}

}  // namespace moe
