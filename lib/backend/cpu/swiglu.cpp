// CpuBackend SwiGLU: z = silu(gate) * up, elementwise (the formulas are in lib/math/scalar.h).
// Backward: dgate = dz * up * silu'(gate), dup = dz * silu(gate); both overwrite.
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"
#include "math/scalar.h"

namespace moe {
namespace {

using NamedTensors = std::initializer_list<std::pair<const Tensor*, const char*>>;

void check_swiglu(const Tensor& ref, NamedTensors ts, const char* op) {
  cpu::check_cpu(ref, op, "gate");
  cpu::check_rank(ref, 2, op, "gate");
  for (auto [t, name] : ts) {
    cpu::check_dtype(*t, ref.dtype(), op, name);
    cpu::check_shape_of(*t, ref.shape(), op, name);
  }
}

}  // namespace

void CpuBackend::swiglu_forward(Tensor& z, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_forward";
  check_swiglu(gate, {{&z, "z"}, {&up, "up"}}, op);
  cpu::dispatch_float(gate.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* pz = z.ptr<T>();
    const T* pg = gate.ptr<T>();
    const T* pu = up.ptr<T>();
    const int64_t n = gate.numel();
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t i = 0; i < n; ++i) pz[i] = math::silu(pg[i]) * pu[i];
  });
}

void CpuBackend::swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dz, const Tensor& gate,
                                 const Tensor& up) {
  const char* op = "swiglu_backward";
  check_swiglu(gate, {{&dgate, "dgate"}, {&dup, "dup"}, {&dz, "dz"}, {&up, "up"}}, op);
  cpu::dispatch_float(gate.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* pdg = dgate.ptr<T>();
    T* pdu = dup.ptr<T>();
    const T* pdz = dz.ptr<T>();
    const T* pg = gate.ptr<T>();
    const T* pu = up.ptr<T>();
    const int64_t n = gate.numel();
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t i = 0; i < n; ++i) {
      const T g = pg[i], d = pdz[i];
      pdg[i] = d * pu[i] * math::silu_grad(g);
      pdu[i] = d * math::silu(g);
    }
  });
}

}  // namespace moe
