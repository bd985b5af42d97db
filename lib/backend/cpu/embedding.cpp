// CpuBackend embedding: a row gather forward, a scatter-add backward.
//
// The backward pass must not race when several tokens share an id, and must sum them in a fixed
// order. Threads therefore own disjoint column ranges of the table and each walks all tokens in
// token order: no atomics, and the same sums for any thread count.
#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace moe {
namespace {

// Ids are checked before any parallel loop (an exception must not leave an OpenMP region).
void check_ids(const Tensor& ids, int64_t vocab, const char* op) {
  const int32_t* p = ids.ptr<int32_t>();
  for (int64_t n = 0; n < ids.numel(); ++n) {
    MOE_CHECK(p[n] >= 0 && p[n] < vocab, "{}: token {} has id {}, expected an id in [0, {})", op,
              n, p[n], vocab);
  }
}

void check_embedding_args(const Tensor& rows, const Tensor& ids, const Tensor& table,
                          const char* op, const char* rows_name, const char* table_name) {
  cpu::check_dtype(ids, DType::kI32, op, "ids");
  cpu::check_rank(ids, 1, op, "ids");
  cpu::check_cpu(table, op, table_name);
  cpu::check_rank(table, 2, op, table_name);
  cpu::check_dtype(rows, table.dtype(), op, rows_name);
  cpu::check_shape_of(rows, {ids.dim(0), table.dim(1)}, op, rows_name);
  check_ids(ids, table.dim(0), op);
}

template <typename T>
void embedding_forward_impl(T* y, const int32_t* ids, const T* table, int64_t n_tokens,
                            int64_t width, int threads) {
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads, n_tokens * width))
  for (int64_t n = 0; n < n_tokens; ++n) {
    std::memcpy(y + n * width, table + static_cast<int64_t>(ids[n]) * width, width * sizeof(T));
  }
}

template <typename T>
void embedding_backward_impl(T* dtable, const T* dy, const int32_t* ids, int64_t n_tokens,
                             int64_t width, int threads) {
  // Column blocks of at least 16 values (one cache line of f32), one or more per thread.
  const int64_t block = std::max<int64_t>(16, (width + threads - 1) / threads);
  const int64_t n_blocks = (width + block - 1) / block;
#pragma omp parallel for schedule(static) num_threads(cpu::team(threads, n_tokens * width))
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t c0 = b * block, c1 = std::min(width, c0 + block);
    for (int64_t n = 0; n < n_tokens; ++n) {
      T* dst = dtable + static_cast<int64_t>(ids[n]) * width;
      const T* src = dy + n * width;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace

void CpuBackend::embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) {
  check_embedding_args(y, ids, table, "embedding_forward", "y", "table");
  cpu::dispatch_float(table.dtype(), "embedding_forward", [&](auto tag) {
    using T = decltype(tag);
    embedding_forward_impl(y.ptr<T>(), ids.ptr<int32_t>(), table.ptr<T>(), ids.dim(0),
                           table.dim(1), threads_);
  });
}

void CpuBackend::embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) {
  check_embedding_args(dy, ids, dtable, "embedding_backward", "dy", "dtable");
  cpu::dispatch_float(dtable.dtype(), "embedding_backward", [&](auto tag) {
    using T = decltype(tag);
    embedding_backward_impl(dtable.ptr<T>(), dy.ptr<T>(), ids.ptr<int32_t>(), ids.dim(0),
                            dtable.dim(1), threads_);
  });
}

}  // namespace moe
