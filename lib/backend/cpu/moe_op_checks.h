// Index-tensor checks and a fixed-order dot product shared by the CPU routing, dispatch and loss
// ops (router.cpp, permute.cpp, loss.cpp), on top of the generic checks of cpu_common.h. Every
// check runs serially before an op's OpenMP loop, because an exception must never escape a
// parallel region.
#pragma once
#include <cstdint>

#include "backend/cpu/cpu_common.h"

namespace moe::cpu {

// `t` is defined, on the host and has exactly `ndim` dimensions; `expected` spells the shape.
inline void check_ndim(const Tensor& t, int ndim, const char* op, const char* name,
                       const char* expected) {
  check_cpu(t, op, name);
  MOE_CHECK(t.ndim() == ndim, "{}: tensor '{}' has shape {}, expected {}", op, name,
            shape_str(t.shape()), expected);
}

// An i32 index tensor with `rows` rows whose every entry lies in [0, bound); `what` names what an
// entry means ("expert index", "dispatched row", ...).
inline void check_index_tensor(const Tensor& t, int64_t rows, int64_t bound, const char* op,
                               const char* name, const char* what) {
  check_dtype(t, DType::kI32, op, name);
  MOE_CHECK(t.ndim() >= 1 && t.dim(0) == rows, "{}: tensor '{}' has shape {}, expected {} rows",
            op, name, shape_str(t.shape()), rows);
  const int32_t* v = t.ptr<int32_t>();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    MOE_CHECK(v[i] >= 0 && v[i] < bound, "{}: tensor '{}' flat entry {} is {}, expected a {} in "
              "[0, {})", op, name, i, v[i], what, bound);
  }
}

// topk_idx: [N, k] i32 with k >= 1 and entries in [0, n_experts).
inline void check_topk_idx(const Tensor& topk_idx, int64_t n_tokens, int64_t n_experts,
                           const char* op) {
  check_ndim(topk_idx, 2, op, "topk_idx", "[N, k]");
  MOE_CHECK(topk_idx.dim(0) == n_tokens && topk_idx.dim(1) >= 1, "{}: tensor 'topk_idx' has "
            "shape {}, expected [{}, k] with k >= 1", op, shape_str(topk_idx.shape()), n_tokens);
  check_index_tensor(topk_idx, n_tokens, n_experts, op, "topk_idx", "expert index");
}

// <a, b> in double with 8 interleaved accumulators (element c feeds lane c % 8) combined in a
// fixed tree: the compiler can vectorise it (a single accumulator is a serial dependency chain it
// may not reorder), and the result is still one fixed function of the inputs.
template <typename T> inline double lane_dot(const T* a, const T* b, int64_t n) {
  constexpr int kLanes = 8;
  double lane[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(a[c + l]) * b[c + l];
  }
  double tail = 0;
  for (; c < n; ++c) tail += static_cast<double>(a[c]) * b[c];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])) +
         tail;
}

}  // namespace moe::cpu
