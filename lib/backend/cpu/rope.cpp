// CpuBackend RoPE, rotate_half pairing (GPT-NeoX / Hugging Face Llama): within each head,
// element i pairs with i + hd/2 and is rotated by angle t * theta^(-2i/hd), t = 0..T-1 the
// position inside its sequence:
//   y_i = x_i cos - x_{i+hd/2} sin,   y_{i+hd/2} = x_{i+hd/2} cos + x_i sin.
// The backward pass is the rotation by -angle. y may alias x: each pair is read before it is
// written.
//
// cos/sin of every (t, i) are computed once per call in double (math::rope_angle) into a
// thread_local table that is reused across calls, so the hot path does not allocate once the
// table has reached its largest size.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"
#include "math/scalar.h"

namespace moe {
namespace {

struct RopeTable {
  std::vector<double> cos, sin;  // [T, hd/2]
  void build(int64_t seq, int64_t head_dim, double theta) {
    const int64_t half = head_dim / 2;
    cos.resize(static_cast<size_t>(seq * half));
    sin.resize(cos.size());
    for (int64_t t = 0; t < seq; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        const double a = math::rope_angle<double>(static_cast<int>(t), static_cast<int>(i),
                                                  static_cast<int>(head_dim), theta);
        cos[t * half + i] = std::cos(a);
        sin[t * half + i] = std::sin(a);
      }
    }
  }
};

// direction +1: forward rotation; -1: its inverse (the backward pass).
template <typename T>
void rope_apply(T* y, const T* x, const RopeTable& table, int64_t batch, int64_t seq,
                int64_t heads, int64_t head_dim, int direction, int threads) {
  const int64_t half = head_dim / 2, width = heads * head_dim, rows = batch * seq;
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads, rows * width))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = r % seq;
    const double* cr = table.cos.data() + t * half;
    const double* sr = table.sin.data() + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      const T* xh = x + r * width + h * head_dim;
      T* yh = y + r * width + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const T c = static_cast<T>(cr[i]), s = static_cast<T>(direction * sr[i]);
        const T a = xh[i], b = xh[i + half];
        yh[i] = a * c - b * s;
        yh[i + half] = b * c + a * s;
      }
    }
  }
}

void rope_run(int threads, Tensor& y, const Tensor& x, int64_t batch, int64_t seq,
              int64_t heads, int64_t head_dim, float theta, int direction, const char* op,
              const char* yname, const char* xname) {
  cpu::check_cpu(x, op, xname);
  cpu::check_dtype(y, x.dtype(), op, yname);
  MOE_CHECK(batch >= 0 && seq > 0 && heads > 0, "{}: expected batch >= 0, seq > 0, heads > 0, "
            "found batch {}, seq {}, heads {}", op, batch, seq, heads);
  MOE_CHECK(head_dim > 0 && head_dim % 2 == 0, "{}: head_dim must be positive and even, found {}",
            op, head_dim);
  MOE_CHECK(theta > 0.0f, "{}: theta must be positive, found {}", op, theta);
  cpu::check_shape_of(x, {batch * seq, heads * head_dim}, op, xname);
  cpu::check_shape_of(y, {batch * seq, heads * head_dim}, op, yname);
  thread_local RopeTable table;
  table.build(seq, head_dim, static_cast<double>(theta));
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    rope_apply(y.ptr<T>(), x.ptr<T>(), table, batch, seq, heads, head_dim, direction, threads);
  });
}

}  // namespace

void CpuBackend::rope_forward(Tensor& y, const Tensor& x, int64_t batch, int64_t seq,
                              int64_t n_heads, int64_t head_dim, float theta) {
  rope_run(threads_, y, x, batch, seq, n_heads, head_dim, theta, +1, "rope_forward", "y", "x");
}

void CpuBackend::rope_backward(Tensor& dx, const Tensor& dy, int64_t batch, int64_t seq,
                               int64_t n_heads, int64_t head_dim, float theta) {
  rope_run(threads_, dx, dy, batch, seq, n_heads, head_dim, theta, -1, "rope_backward", "dx",
           "dy");
}

}  // namespace moe
