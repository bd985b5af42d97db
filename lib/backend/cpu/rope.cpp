// CpuBackend RoPE, rotate_half pairing (GPT-NeoX / Hugging Face Llama): within each head,
// element i pairs with i + hd/2 and is rotated by angle t * theta^(-2i/hd), t = 0..T-1 the
// position inside its sequence:
//   y_i = x_i cos - x_{i+hd/2} sin,   y_{i+hd/2} = x_{i+hd/2} cos + x_i sin.
// The backward pass is the rotation by -angle. y may alias x: each pair is read before it is
// written. rope_forward_offset (the incremental forward over a KV cache) shifts sequence b's
// positions by offsets[b]; the angle of a position is the same whichever op computes it, so a
// token rotated at position p by either op gets bitwise the same values.
//
// cos/sin of every (t, i) are computed once per call in double (math::rope_angle) into a
// thread_local table that is reused across calls, so the hot path does not allocate once the
// table has reached its largest size.
#include <algorithm>
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
// offsets: per-sequence position offsets, or nullptr for none.
template <typename T>
void rope_apply(T* y, const T* x, const RopeTable& table, const int32_t* offsets, int64_t batch,
                int64_t seq, int64_t heads, int64_t head_dim, int direction, int threads) {
  const int64_t half = head_dim / 2, width = heads * head_dim, rows = batch * seq;
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads, rows * width))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = r % seq + (offsets != nullptr ? offsets[r / seq] : 0);
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

// offsets: undefined, or [batch] i32 position offsets (validated here: >= 0).
void rope_run(int threads, Tensor& y, const Tensor& x, const Tensor& offsets, int64_t batch,
              int64_t seq, int64_t heads, int64_t head_dim, float theta, int direction,
              const char* op, const char* yname, const char* xname) {
  cpu::check_cpu(x, op, xname);
  cpu::check_dtype(y, x.dtype(), op, yname);
  MOE_CHECK(batch >= 0 && seq > 0 && heads > 0, "{}: expected batch >= 0, seq > 0, heads > 0, "
            "found batch {}, seq {}, heads {}", op, batch, seq, heads);
  MOE_CHECK(head_dim > 0 && head_dim % 2 == 0, "{}: head_dim must be positive and even, found {}",
            op, head_dim);
  MOE_CHECK(theta > 0.0f, "{}: theta must be positive, found {}", op, theta);
  cpu::check_shape_of(x, {batch * seq, heads * head_dim}, op, xname);
  cpu::check_shape_of(y, {batch * seq, heads * head_dim}, op, yname);
  int64_t positions = seq;
  const int32_t* off = nullptr;
  if (offsets.defined()) {
    cpu::check_cpu(offsets, op, "offsets");
    MOE_CHECK(offsets.dtype() == DType::kI32, "{}: tensor 'offsets' has dtype {}, expected i32",
              op, dtype_name(offsets.dtype()));
    cpu::check_shape_of(offsets, {batch}, op, "offsets");
    off = offsets.ptr<int32_t>();
    for (int64_t b = 0; b < batch; ++b) {
      MOE_CHECK(off[b] >= 0, "{}: offsets[{}] = {} is negative", op, b, off[b]);
      positions = std::max<int64_t>(positions, off[b] + seq);
    }
  }
  thread_local RopeTable table;
  table.build(positions, head_dim, static_cast<double>(theta));
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    rope_apply(y.ptr<T>(), x.ptr<T>(), table, off, batch, seq, heads, head_dim, direction,
               threads);
  });
}

}  // namespace

void CpuBackend::rope_forward(Tensor& y, const Tensor& x, int64_t batch, int64_t seq,
                              int64_t n_heads, int64_t head_dim, float theta) {
  rope_run(threads_, y, x, Tensor(), batch, seq, n_heads, head_dim, theta, +1, "rope_forward",
           "y", "x");
}

void CpuBackend::rope_forward_offset(Tensor& y, const Tensor& x, const Tensor& offsets,
                                     int64_t batch, int64_t seq, int64_t n_heads,
                                     int64_t head_dim, float theta) {
  MOE_CHECK(offsets.defined(), "rope_forward_offset: tensor 'offsets' is undefined");
  rope_run(threads_, y, x, offsets, batch, seq, n_heads, head_dim, theta, +1,
           "rope_forward_offset", "y", "x");
}

void CpuBackend::rope_backward(Tensor& dx, const Tensor& dy, int64_t batch, int64_t seq,
                               int64_t n_heads, int64_t head_dim, float theta) {
  rope_run(threads_, dx, dy, Tensor(), batch, seq, n_heads, head_dim, theta, -1,
           "rope_backward", "dx", "dy");
}

}  // namespace moe
