// SwiGLU: z = silu(gate) * up, silu(g) = g * sigmoid(g); elementwise, fp32 arithmetic.
#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
__global__ void swiglu_forward_kernel(T* z, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float g = to_f(gate[i]);
    z[i] = from_f<T>(g * sigmoid(g) * to_f(up[i]));
  }
}

// d silu(g)/dg = sig(g) * (1 + g * (1 - sig(g))). dz is T or f32 (TD): the model's expert path
// keeps dz in f32 so the sp gradient is not rounded away before it gets here (issue 17).
template <typename T, typename TD>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const TD* dz, const T* gate, const T* up,
                                       int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float g = to_f(gate[i]), u = to_f(up[i]), dzi = to_f(dz[i]);
    float s = sigmoid(g);
    dgate[i] = from_f<T>(dzi * u * s * (1.0f + g * (1.0f - s)));
    dup[i] = from_f<T>(dzi * g * s);
  }
}

void check_same(const Tensor& a, const Tensor& b, const char* op, const char* name) {
  MOE_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype(),
            "{}: {} expected {} {}, found {} {}", op, name, dtype_name(b.dtype()),
            shape_str(b.shape()), dtype_name(a.dtype()), shape_str(a.shape()));
}

}  // namespace

void CudaBackend::swiglu_forward(Tensor& z, const Tensor& gate, const Tensor& up) {
  check_same(up, gate, "swiglu_forward", "up");
  check_same(z, gate, "swiglu_forward", "z");
  int64_t n = gate.numel();
  if (n == 0) return;
  MOE_DISPATCH_ACT(gate.dtype(), "swiglu_forward", T, {
    swiglu_forward_kernel<T><<<grid_for(n), kBlock, 0, stream_>>>(
        static_cast<T*>(z.data()), static_cast<const T*>(gate.data()),
        static_cast<const T*>(up.data()), n);
    MOE_LAUNCH_CHECK("swiglu_forward_kernel");
  });
  after_op("swiglu_forward");
}

void CudaBackend::swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dz,
                                  const Tensor& gate, const Tensor& up) {
  check_same(up, gate, "swiglu_backward", "up");
  MOE_CHECK(dz.shape() == gate.shape() &&
                (dz.dtype() == gate.dtype() || dz.dtype() == DType::kF32),
            "swiglu_backward: dz expected {} {} (or f32), found {} {}", dtype_name(gate.dtype()),
            shape_str(gate.shape()), dtype_name(dz.dtype()), shape_str(dz.shape()));
  check_same(dgate, gate, "swiglu_backward", "dgate");
  check_same(dup, gate, "swiglu_backward", "dup");
  int64_t n = gate.numel();
  if (n == 0) return;
  MOE_DISPATCH_ACT(gate.dtype(), "swiglu_backward", T, {
    auto launch = [&](const auto* dzp) {
      using TD = std::remove_const_t<std::remove_pointer_t<decltype(dzp)>>;
      swiglu_backward_kernel<T, TD><<<grid_for(n), kBlock, 0, stream_>>>(
          static_cast<T*>(dgate.data()), static_cast<T*>(dup.data()), dzp,
          static_cast<const T*>(gate.data()), static_cast<const T*>(up.data()), n);
      MOE_LAUNCH_CHECK("swiglu_backward_kernel");
    };
    if (dz.dtype() == DType::kF32) {
      launch(dz.ptr<float>());
    } else {
      launch(static_cast<const T*>(dz.data()));
    }
  });
  after_op("swiglu_backward");
}

}  // namespace moe
