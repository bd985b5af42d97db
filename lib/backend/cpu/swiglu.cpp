// CpuBackend SwiGLU: z = silu(gate) * up, elementwise (the formulas are in lib/math/scalar.h).
// Backward: dgate = dz * up * silu'(gate), dup = dz * silu(gate); both overwrite.
//
// The sigmoid is 1 / (1 + exp(-x)); it needs no overflow branch (exp(-x) saturating high gives
// s = 0, low gives s = 1). The exps of a chunk of kChunk elements are computed first with the
// vectorised cpu::exp_array into a stack buffer, then the rest of the formula in a second,
// plainly vectorisable loop. Chunks start at multiples of kChunk, so the numbers do not depend
// on the thread count.
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"
#include "backend/cpu/vec_exp.h"
#include "math/scalar.h"

namespace moe {
namespace {

constexpr int64_t kChunk = 256;

using NamedTensors = std::initializer_list<std::pair<const Tensor*, const char*>>;

void check_swiglu(const Tensor& ref, NamedTensors ts, const char* op) {
  cpu::check_cpu(ref, op, "gate");
  cpu::check_rank(ref, 2, op, "gate");
  for (auto [t, name] : ts) {
    cpu::check_dtype(*t, ref.dtype(), op, name);
    cpu::check_shape_of(*t, ref.shape(), op, name);
  }
}

// sig[j] = sigmoid(g[j]) for j < len (len <= kChunk).
template <typename T> void sigmoid_chunk(T* sig, const T* g, int64_t len) {
  for (int64_t j = 0; j < len; ++j) sig[j] = -g[j];
  cpu::exp_array(sig, sig, len);
  for (int64_t j = 0; j < len; ++j) sig[j] = T(1) / (T(1) + sig[j]);
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
    const int64_t n = gate.numel(), chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
      T sig[kChunk];
      sigmoid_chunk(sig, pg + i0, len);
      for (int64_t j = 0; j < len; ++j) {
        pz[i0 + j] = math::silu_from_sigmoid(pg[i0 + j], sig[j]) * pu[i0 + j];
      }
    }
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
    const int64_t n = gate.numel(), chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads_, n))
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
      T sig[kChunk];
      sigmoid_chunk(sig, pg + i0, len);
      for (int64_t j = 0; j < len; ++j) {
        const T g = pg[i0 + j], d = pdz[i0 + j];
        pdg[i0 + j] = d * pu[i0 + j] * math::silu_grad_from_sigmoid(g, sig[j]);
        pdu[i0 + j] = d * math::silu_from_sigmoid(g, sig[j]);
      }
    }
  });
}

}  // namespace moe
