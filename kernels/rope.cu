// Rotary position embedding, rotate_half pairing (dim i with i + hd/2), position t = row % seq.
// The angle t * theta^(-2i/hd) and its sine/cosine are computed in double: at t ~ 1e3 an fp32
// angle would already be off by ~1e-4 rad. y may alias x (each thread reads its pair first).
#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

// sign = +1: forward rotation; -1: the inverse (transpose) rotation used by the backward pass.
template <typename T>
__global__ void rope_kernel(T* y, const T* x, int64_t rows, int64_t seq, int64_t heads,
                            int64_t hd, double theta, float sign) {
  const int64_t half = hd / 2, pairs = rows * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t row = i / (heads * half), rem = i % (heads * half);
    int64_t h = rem / half, p = rem % half;
    int64_t t = row % seq;
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

void launch_rope(cudaStream_t stream, Tensor& y, const Tensor& x, int64_t batch, int64_t seq,
                 int64_t heads, int64_t hd, float theta, float sign, const char* op) {
  MOE_CHECK(hd > 0 && hd % 2 == 0, "{}: head_dim must be even and positive, found {}", op, hd);
  check_shape(x, {batch * seq, heads * hd}, op);
  MOE_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(), "{}: y must match x ({} {})", op,
            dtype_name(x.dtype()), shape_str(x.shape()));
  int64_t pairs = batch * seq * heads * hd / 2;
  if (pairs == 0) return;
  MOE_DISPATCH_ACT(x.dtype(), op, T, {
    rope_kernel<T><<<grid_for(pairs), kBlock, 0, stream>>>(
        static_cast<T*>(y.data()), static_cast<const T*>(x.data()), batch * seq, seq, heads, hd,
        double(theta), sign);
    MOE_LAUNCH_CHECK("rope_kernel");
  });
}

}  // namespace

void CudaBackend::rope_forward(Tensor& y, const Tensor& x, int64_t batch, int64_t seq,
                               int64_t n_heads, int64_t head_dim, float theta) {
  launch_rope(stream_, y, x, batch, seq, n_heads, head_dim, theta, 1.0f, "rope_forward");
  after_op("rope_forward");
}

void CudaBackend::rope_backward(Tensor& dx, const Tensor& dy, int64_t batch, int64_t seq,
                                int64_t n_heads, int64_t head_dim, float theta) {
  launch_rope(stream_, dx, dy, batch, seq, n_heads, head_dim, theta, -1.0f, "rope_backward");
  after_op("rope_backward");
}

}  // namespace moe
