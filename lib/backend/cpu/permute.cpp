// CPU dispatch and combine: the dispatch plan (a stable counting sort of the (token, slot) pairs
// by expert), the gather of token rows into expert order (permute), and the weighted scatter back
// (unpermute), with their backward passes.
//
// Decisions:
// - The plan is built serially (histogram -> exclusive scan -> scatter in (token, slot) order):
//   O(N k) integer work, and the serial scatter is what makes the order stable — rows of one
//   expert keep token order, then slot order — with no dependence on the thread count.
// - Every other op loops over TOKENS in parallel and reads / writes the token's own k rows.
//   A valid plan maps (token, slot) pairs one-to-one onto rows, so every output element has
//   exactly one writer, and per-token sums run in slot order (deterministic, no atomics).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/moe_op_checks.h"

namespace moe {
namespace {

using cpu::check_dtype;
using cpu::check_index_tensor;
using cpu::check_ndim;
using cpu::check_topk_idx;
using cpu::dispatch_float;

// Checks token_row: [N, k] i32 with every entry a row index in [0, n_rows).
void check_token_row(const Tensor& token_row, int64_t n_tokens, int64_t n_rows, const char* op) {
  check_ndim(token_row, 2, op, "token_row", "[N, k]");
  MOE_CHECK(token_row.dim(1) >= 1 && token_row.dim(0) == n_tokens && token_row.dim(1) * n_tokens ==
                n_rows,
            "{}: token_row: expected shape [N = {}, k] with N * k = R = {}, found {}", op,
            n_tokens, n_rows, shape_str(token_row.shape()));
  check_index_tensor(token_row, n_tokens, n_rows, op, "token_row", "dispatched row");
}

}  // namespace

void CpuBackend::moe_dispatch_plan(Tensor& expert_offsets, Tensor& row_token, Tensor& token_row,
                                   const Tensor& topk_idx, int64_t n_experts) {
  const char* op = "moe_dispatch_plan";
  MOE_CHECK(n_experts >= 1, "{}: n_experts must be >= 1, found {}", op, n_experts);
  MOE_CHECK(topk_idx.defined() && topk_idx.ndim() == 2, "{}: topk_idx: expected [N, k], found {}",
            op, topk_idx.defined() ? shape_str(topk_idx.shape()) : "undefined");
  const int64_t n_tokens = topk_idx.dim(0), k = topk_idx.dim(1), n_rows = n_tokens * k;
  check_topk_idx(topk_idx, n_tokens, n_experts, op);
  MOE_CHECK(n_rows <= INT32_MAX, "{}: R = N * k = {} dispatched rows do not fit i32 indices", op,
            n_rows);
  check_shape(expert_offsets, {n_experts + 1}, "moe_dispatch_plan: expert_offsets");
  check_shape(row_token, {n_rows}, "moe_dispatch_plan: row_token");
  check_shape(token_row, {n_tokens, k}, "moe_dispatch_plan: token_row");
  check_dtype(expert_offsets, DType::kI32, op, "expert_offsets");
  check_dtype(row_token, DType::kI32, op, "row_token");
  check_dtype(token_row, DType::kI32, op, "token_row");

  const int32_t* idx = topk_idx.ptr<int32_t>();
  int32_t* offsets = expert_offsets.ptr<int32_t>();
  int32_t* rt = row_token.ptr<int32_t>();
  int32_t* tr = token_row.ptr<int32_t>();
  // Histogram into offsets[e + 1], then an inclusive scan turns it into exclusive offsets.
  std::fill(offsets, offsets + n_experts + 1, 0);
  for (int64_t i = 0; i < n_rows; ++i) ++offsets[idx[i] + 1];
  for (int64_t e = 0; e < n_experts; ++e) offsets[e + 1] += offsets[e];
  // Scatter in (token, slot) order: next[e] is the next free row of expert e.
  std::vector<int32_t> next(offsets, offsets + n_experts);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t row = next[idx[t * k + j]]++;
      rt[row] = static_cast<int32_t>(t);
      tr[t * k + j] = row;
    }
  }
}

void CpuBackend::moe_permute(Tensor& xp, const Tensor& x, const Tensor& row_token) {
  const char* op = "moe_permute";
  check_ndim(row_token, 1, op, "row_token", "[R]");
  check_ndim(x, 2, op, "x", "[N, d]");
  const int64_t n_rows = row_token.dim(0), n_tokens = x.dim(0), d = x.dim(1);
  check_shape(xp, {n_rows, d}, "moe_permute: xp");
  check_dtype(xp, x.dtype(), op, "xp");
  check_index_tensor(row_token, n_rows, n_tokens, op, "row_token", "token index");
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* out = xp.ptr<T>();
    const T* in = x.ptr<T>();
    const int32_t* rt = row_token.ptr<int32_t>();
    const int n_threads = cpu::team(threads_, n_rows * d);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t r = 0; r < n_rows; ++r) {
      std::copy(in + rt[r] * d, in + (rt[r] + 1) * d, out + r * d);
    }
  });
}

void CpuBackend::moe_permute_backward(Tensor& dx, const Tensor& dxp, const Tensor& token_row) {
  const char* op = "moe_permute_backward";
  check_ndim(dx, 2, op, "dx", "[N, d]");
  const int64_t n_tokens = dx.dim(0), d = dx.dim(1);
  check_ndim(dxp, 2, op, "dxp", "[R, d]");
  const int64_t n_rows = dxp.dim(0);
  check_shape(dxp, {n_rows, d}, "moe_permute_backward: dxp");
  check_dtype(dxp, dx.dtype(), op, "dxp");
  check_token_row(token_row, n_tokens, n_rows, op);
  const int64_t k = token_row.dim(1);
  dispatch_float(dx.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* out = dx.ptr<T>();
    const T* in = dxp.ptr<T>();
    const int32_t* tr = token_row.ptr<int32_t>();
    const int n_threads = cpu::team(threads_, n_tokens * k * d);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      T* out_t = out + t * d;
      const T* first = in + static_cast<int64_t>(tr[t * k]) * d;
      std::copy(first, first + d, out_t);
      for (int64_t j = 1; j < k; ++j) {
        const T* row = in + static_cast<int64_t>(tr[t * k + j]) * d;
        for (int64_t c = 0; c < d; ++c) out_t[c] += row[c];
      }
    }
  });
}

void CpuBackend::moe_unpermute(Tensor& y, const Tensor& yp, const Tensor& topk_weight,
                               const Tensor& token_row, bool accumulate) {
  const char* op = "moe_unpermute";
  check_ndim(y, 2, op, "y", "[N, d]");
  const int64_t n_tokens = y.dim(0), d = y.dim(1);
  check_ndim(yp, 2, op, "yp", "[R, d]");
  const int64_t n_rows = yp.dim(0);
  check_shape(yp, {n_rows, d}, "moe_unpermute: yp");
  check_token_row(token_row, n_tokens, n_rows, op);
  const int64_t k = token_row.dim(1);
  check_shape(topk_weight, {n_tokens, k}, "moe_unpermute: topk_weight");
  check_dtype(yp, y.dtype(), op, "yp");
  check_dtype(topk_weight, y.dtype(), op, "topk_weight");
  dispatch_float(y.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* out = y.ptr<T>();
    const T* in = yp.ptr<T>();
    const T* w = topk_weight.ptr<T>();
    const int32_t* tr = token_row.ptr<int32_t>();
    const int n_threads = cpu::team(threads_, n_tokens * k * d);
#pragma omp parallel num_threads(n_threads)
    {
      // Per-token sum in slot order, then one assignment or addition into y.
      std::vector<T> sum(static_cast<size_t>(d));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < n_tokens; ++t) {
        std::fill(sum.begin(), sum.end(), T(0));
        for (int64_t j = 0; j < k; ++j) {
          const T w_tj = w[t * k + j];
          const T* row = in + static_cast<int64_t>(tr[t * k + j]) * d;
          for (int64_t c = 0; c < d; ++c) sum[c] += w_tj * row[c];
        }
        T* out_t = out + t * d;
        if (accumulate) {
          for (int64_t c = 0; c < d; ++c) out_t[c] += sum[c];
        } else {
          std::copy(sum.begin(), sum.end(), out_t);
        }
      }
    }
  });
}

void CpuBackend::moe_unpermute_backward(Tensor& dyp, Tensor& dweight, const Tensor& dy,
                                        const Tensor& yp, const Tensor& topk_weight,
                                        const Tensor& token_row) {
  const char* op = "moe_unpermute_backward";
  check_ndim(dy, 2, op, "dy", "[N, d]");
  const int64_t n_tokens = dy.dim(0), d = dy.dim(1);
  check_ndim(yp, 2, op, "yp", "[R, d]");
  const int64_t n_rows = yp.dim(0);
  check_shape(yp, {n_rows, d}, "moe_unpermute_backward: yp");
  check_shape(dyp, {n_rows, d}, "moe_unpermute_backward: dyp");
  check_token_row(token_row, n_tokens, n_rows, op);
  const int64_t k = token_row.dim(1);
  check_shape(topk_weight, {n_tokens, k}, "moe_unpermute_backward: topk_weight");
  check_shape(dweight, {n_tokens, k}, "moe_unpermute_backward: dweight");
  const DType dt = dy.dtype();
  check_dtype(yp, dt, op, "yp");
  check_dtype(dyp, dt, op, "dyp");
  check_dtype(topk_weight, dt, op, "topk_weight");
  check_dtype(dweight, dt, op, "dweight");
  dispatch_float(dt, op, [&](auto tag) {
    using T = decltype(tag);
    T* g_rows = dyp.ptr<T>();
    T* g_w = dweight.ptr<T>();
    const T* g = dy.ptr<T>();
    const T* rows = yp.ptr<T>();
    const T* w = topk_weight.ptr<T>();
    const int32_t* tr = token_row.ptr<int32_t>();
    const int n_threads = cpu::team(threads_, n_tokens * k * d);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      const T* g_t = g + t * d;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t row = tr[t * k + j];
        const T w_tj = w[t * k + j];
        const T* yp_row = rows + row * d;
        T* dyp_row = g_rows + row * d;
        for (int64_t c = 0; c < d; ++c) dyp_row[c] = w_tj * g_t[c];
        g_w[t * k + j] = static_cast<T>(cpu::lane_dot(g_t, yp_row, d));
      }
    }
  });
}

}  // namespace moe
