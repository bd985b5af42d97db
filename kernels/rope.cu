// Rotary position embedding, rotate_half pairing (dim i with i + hd/2), position t = row % seq,
// plus offsets[row / seq] for rope_forward_offset (the incremental forward over a KV cache; a
// negative offset raises kErrCacheSpan and is treated as 0).
// The angle t * theta^(-2i/hd) and its sine/cosine are computed in double: at t ~ 1e3 an fp32
// angle would already be off by ~1e-4 rad. y may alias x (each thread reads its pair first).
#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

// sign = +1: forward rotation; -1: the inverse (transpose) rotation used by the backward pass.
// offsets: [rows / seq] position offsets, or nullptr.
template <typename T>
__global__ void rope_kernel(T* y, const T* x, const int32_t* offsets, int64_t rows, int64_t seq,
                            int64_t heads, int64_t hd, double theta, float sign,
                            int* error_flag) {
  const int64_t half = hd / 2, pairs = rows * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t row = i / (heads * half), rem = i % (heads * half);
    int64_t h = rem / half, p = rem % half;
    int64_t t = row % seq;
    if (offsets != nullptr) {
      const int32_t off = offsets[row / seq];
      if (off < 0) {
        if (p == 0 && h == 0) raise_device_error(error_flag, kErrCacheSpan);
      } else {
        t += off;
      }
    }
    double angle = double(t) * pow(theta, -2.0 * double(p) / double(hd));
    double s, c;
    sincos(angle, &s, &c);
    float cs = float(c), sn = sign * float(s);
    int64_t base = row * heads * hd + h * hd;
    float a = to_f(x[base + p]), b = to_f(x[base + p + half]);
    y[base + p] = from_f<T>(a * cs - b * sn);
    y[base + p + half] = from_f<T>(b * cs + a * sn);
  }
}

void launch_rope(cudaStream_t stream, Tensor& y, const Tensor& x, const Tensor& offsets,
                 int64_t batch, int64_t seq, int64_t heads, int64_t hd, float theta, float sign,
                 int* error_flag, const char* op) {
  MOE_CHECK(hd > 0 && hd % 2 == 0, "{}: head_dim must be even and positive, found {}", op, hd);
  MOE_CHECK(seq > 0, "{}: seq must be positive, found {}", op, seq);
  if (offsets.defined()) {
    check_shape(offsets, {batch}, op);
    MOE_CHECK(offsets.dtype() == DType::kI32 && offsets.device() == Device::kCuda,
              "{}: offsets must be an i32 CUDA tensor, found {}", op, dtype_name(offsets.dtype()));
  }
  check_shape(x, {batch * seq, heads * hd}, op);
  MOE_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(), "{}: y must match x ({} {})", op,
            dtype_name(x.dtype()), shape_str(x.shape()));
  int64_t pairs = batch * seq * heads * hd / 2;
  if (pairs == 0) return;
  MOE_DISPATCH_ACT(x.dtype(), op, T, {
    rope_kernel<T><<<grid_for(pairs), kBlock, 0, stream>>>(
        static_cast<T*>(y.data()), static_cast<const T*>(x.data()),
        offsets.defined() ? offsets.ptr<int32_t>() : nullptr, batch * seq, seq, heads, hd,
        double(theta), sign, error_flag);
    MOE_LAUNCH_CHECK("rope_kernel");
  });
}

}  // namespace

void CudaBackend::rope_forward(Tensor& y, const Tensor& x, int64_t batch, int64_t seq,
                               int64_t n_heads, int64_t head_dim, float theta) {
  launch_rope(stream_, y, x, Tensor(), batch, seq, n_heads, head_dim, theta, 1.0f, error_flag_,
              "rope_forward");
  after_op("rope_forward");
}

void CudaBackend::rope_forward_offset(Tensor& y, const Tensor& x, const Tensor& offsets,
                                      int64_t batch, int64_t seq, int64_t n_heads,
                                      int64_t head_dim, float theta) {
  MOE_CHECK(offsets.defined(), "rope_forward_offset: offsets is undefined");
  launch_rope(stream_, y, x, offsets, batch, seq, n_heads, head_dim, theta, 1.0f, error_flag_,
              "rope_forward_offset");
  after_op("rope_forward_offset");
}

void CudaBackend::rope_backward(Tensor& dx, const Tensor& dy, int64_t batch, int64_t seq,
                                int64_t n_heads, int64_t head_dim, float theta) {
  launch_rope(stream_, dx, dy, Tensor(), batch, seq, n_heads, head_dim, theta, -1.0f,
              error_flag_, "rope_backward");
  after_op("rope_backward");
}

}  // namespace moe
