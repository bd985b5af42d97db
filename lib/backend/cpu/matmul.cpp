// CpuBackend matrix products through OpenBLAS: y = x w^T with w stored [out, in], and the grouped
// expert GEMM in which rows [off[e], off[e+1]) of x use w[e].
//
// f32 products go through oneDNN's dnnl_sgemm (row-major), f64 products (the finite-difference
// checks) through OpenBLAS's cblas_dgemm. On the d=128 benchmark shapes (tools/bench_sgemm.cpp
// --shapes) dnnl_sgemm single-threaded was 2-16% faster than OpenBLAS sgemm, and a training step
// about 9% faster (docs/benchmarks.md). Each call is pinned to one thread (see gemm below).
//
// Row-major GEMM calls:
//   forward   y[M,N]  = x[M,K] * w[N,K]^T            (NoTrans, Trans)
//   dx        dx[M,K] = dy[M,N] * w[N,K]             (NoTrans, NoTrans)
//   dw        dw[N,K] += dy[M,N]^T * x[M,K]          (Trans, NoTrans)
// beta = 0 never reads the output, so an output poisoned with NaN is fully overwritten.
//
// Parallelism: OpenBLAS runs single-threaded (cpu_backend.cpp says why). Each product is cut
// into fixed blocks of kBlock rows of its output (rows of y or dx, rows of dw), spread over the
// OpenMP threads, one GEMM per block. A block's GEMM is the same call whatever the thread count,
// so results are bitwise independent of it. The grouped GEMM makes one task list of the blocks of
// every non-empty expert.
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace moe {
namespace {

// y[M,N] = alpha * op(a) * op(b) + beta * y, row-major; a thin wrapper over sgemm / dgemm.
//
// dnnl_sgemm threads itself with OpenMP when it is called outside an active parallel region
// (it asks omp_get_max_threads()). A product that is a single block runs outside one (run_blocks'
// `if`), so the call is pinned to one thread here: the same call then gives the same bits at any
// thread count, and never nests a second team inside the backend's own.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, double beta, float* c,
          int64_t ldc) {
  const int saved_threads = omp_get_max_threads();
  if (saved_threads != 1) omp_set_num_threads(1);
  const dnnl_status_t status =
      dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, static_cast<float>(alpha), a,
                 lda, b, ldb, static_cast<float>(beta), c, ldc);
  if (saved_threads != 1) omp_set_num_threads(saved_threads);
  MOE_CHECK(status == dnnl_success, "dnnl_sgemm({}x{}x{}, lda {}, ldb {}, ldc {}) failed with "
            "oneDNN status {}", m, n, k, lda, ldb, ldc, static_cast<int>(status));
}
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
          const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
          int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb),
              beta, c, static_cast<int>(ldc));
}

// The three products of one dense layer. GEMM with k = 0 is y = beta * y, which BLAS may skip;
// these wrappers write the zeros themselves in that case.
template <typename T>
void dense_forward(T* y, const T* x, const T* w, int64_t m, int64_t n, int64_t k, bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) std::fill(y, y + m * n, T(0));
    return;
  }
  gemm(false, true, m, n, k, 1.0, x, k, w, k, accumulate ? 1.0 : 0.0, y, n);
}
template <typename T>
void dense_dx(T* dx, const T* dy, const T* w, int64_t m, int64_t n, int64_t k, bool accumulate) {
  if (m == 0 || k == 0) return;
  if (n == 0) {
    if (!accumulate) std::fill(dx, dx + m * k, T(0));
    return;
  }
  gemm(false, false, m, k, n, 1.0, dy, n, w, k, accumulate ? 1.0 : 0.0, dx, k);
}
// Rows [n0, n1) of dw[N,K] += dy[M,N]^T x[M,K]: the columns n0..n1 of dy, leading dimension N.
template <typename T>
void dense_dw_rows(T* dw, const T* dy, const T* x, int64_t m, int64_t n, int64_t k, int64_t n0,
                   int64_t n1) {
  if (m == 0 || n1 <= n0 || k == 0) return;
  gemm(true, false, n1 - n0, k, m, 1.0, dy + n0, n, x, k, 1.0, dw + n0 * k, k);
}

// 256 rows: OpenBLAS packs the whole B operand (the weight) once per call, so fewer, taller
// blocks pack it less often; on the d=128 benchmark shapes 256 was as fast or faster than 128
// for every product (the LM head's forward 1.6x), and M = 1024 tokens still gives 4 blocks.
constexpr int64_t kBlock = 256;

// One task: rows [begin, end) of the output of expert `expert` (expert 0 for a dense matmul).
struct Block {
  int64_t expert, begin, end;
};

// Appends the blocks of rows [begin, end) of one expert.
void add_blocks(std::vector<Block>& blocks, int64_t expert, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; r += kBlock) {
    blocks.push_back({expert, r, std::min(end, r + kBlock)});
  }
}

// Runs body(block) for every block, spread over threads.
template <typename Body>
void run_blocks(const std::vector<Block>& blocks, int threads, Body&& body) {
  const int64_t n = static_cast<int64_t>(blocks.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (n > 1)
  for (int64_t i = 0; i < n; ++i) body(blocks[static_cast<size_t>(i)]);
}

// An empty task list: thread_local scratch reused across calls (no allocation once grown). Two
// slots, so a caller can hold the lists of two products at once.
std::vector<Block>& block_scratch(int slot) {
  thread_local std::vector<Block> lists[2];
  lists[slot].clear();
  return lists[slot];
}

// Reads and validates the expert offsets: off[0] = 0, non-decreasing, off[E] = rows.
std::vector<int64_t> read_offsets(const Tensor& offsets, int64_t experts, int64_t rows,
                                  const char* op) {
  cpu::check_dtype(offsets, DType::kI32, op, "expert_offsets");
  cpu::check_shape_of(offsets, {experts + 1}, op, "expert_offsets");
  const int32_t* p = offsets.ptr<int32_t>();
  std::vector<int64_t> off(p, p + experts + 1);
  MOE_CHECK(off[0] == 0 && off[experts] == rows, "{}: expert_offsets must run from 0 to {} rows, "
            "found {} .. {}", op, rows, off[0], off[experts]);
  for (int64_t e = 0; e < experts; ++e) {
    MOE_CHECK(off[e] <= off[e + 1], "{}: expert_offsets decrease at expert {}: {} then {}", op, e,
              off[e], off[e + 1]);
  }
  return off;
}

}  // namespace

void CpuBackend::matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) {
  const char* op = "matmul_forward";
  cpu::check_cpu(x, op, "x");
  cpu::check_rank(x, 2, op, "x");
  cpu::check_dtype(w, x.dtype(), op, "w");
  cpu::check_rank(w, 2, op, "w");
  MOE_CHECK(w.dim(1) == x.dim(1), "{}: x is {} and w is {}: expected w's second dimension to be "
            "{}", op, shape_str(x.shape()), shape_str(w.shape()), x.dim(1));
  cpu::check_dtype(y, x.dtype(), op, "y");
  cpu::check_shape_of(y, {x.dim(0), w.dim(0)}, op, "y");
  const int64_t m = x.dim(0), n = w.dim(0), k = x.dim(1);
  std::vector<Block>& blocks = block_scratch(0);
  add_blocks(blocks, 0, 0, m);
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* py = y.ptr<T>();
    const T* px = x.ptr<T>();
    const T* pw = w.ptr<T>();
    run_blocks(blocks, threads_, [&](const Block& b) {
      dense_forward(py + b.begin * n, px + b.begin * k, pw, b.end - b.begin, n, k, accumulate);
    });
  });
}

void CpuBackend::matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                                 const Tensor& w, bool accumulate_dx) {
  const char* op = "matmul_backward";
  cpu::check_cpu(x, op, "x");
  cpu::check_rank(x, 2, op, "x");
  cpu::check_dtype(w, x.dtype(), op, "w");
  cpu::check_rank(w, 2, op, "w");
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  cpu::check_shape_of(w, {n, k}, op, "w");
  cpu::check_dtype(dy, x.dtype(), op, "dy");
  cpu::check_shape_of(dy, {m, n}, op, "dy");
  if (dx.defined()) {
    cpu::check_dtype(dx, x.dtype(), op, "dx");
    cpu::check_shape_of(dx, {m, k}, op, "dx");
  }
  if (dw.defined()) {
    cpu::check_dtype(dw, x.dtype(), op, "dw");
    cpu::check_shape_of(dw, {n, k}, op, "dw");
  }
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pdy = dy.ptr<T>();
    const T* px = x.ptr<T>();
    const T* pw = w.ptr<T>();
    // One task list: blocks of rows of dx (tag kDx) and blocks of rows of dw (output features,
    // each summing over all of M; tag kDw). They write disjoint memory, and one parallel region
    // keeps both threads busy where dw is a single block (n <= kBlock).
    constexpr int64_t kDx = 0, kDw = 1;
    T* pdx = dx.defined() ? dx.ptr<T>() : nullptr;
    T* pdw = dw.defined() ? dw.ptr<T>() : nullptr;
    std::vector<Block>& blocks = block_scratch(0);
    if (pdw) add_blocks(blocks, kDw, 0, n);
    if (pdx) add_blocks(blocks, kDx, 0, m);
    run_blocks(blocks, threads_, [&](const Block& b) {
      if (b.expert == kDx) {
        dense_dx(pdx + b.begin * k, pdy + b.begin * n, pw, b.end - b.begin, n, k, accumulate_dx);
      } else {
        dense_dw_rows(pdw, pdy, px, m, n, k, b.begin, b.end);
      }
    });
  });
}

void CpuBackend::grouped_matmul_forward(Tensor& y, const Tensor& x, const Tensor& w,
                                        const Tensor& expert_offsets) {
  const char* op = "grouped_matmul_forward";
  cpu::check_cpu(x, op, "x");
  cpu::check_rank(x, 2, op, "x");
  cpu::check_dtype(w, x.dtype(), op, "w");
  cpu::check_rank(w, 3, op, "w");
  const int64_t rows = x.dim(0), k = x.dim(1), experts = w.dim(0), n = w.dim(1);
  cpu::check_shape_of(w, {experts, n, k}, op, "w");
  cpu::check_dtype(y, x.dtype(), op, "y");
  cpu::check_shape_of(y, {rows, n}, op, "y");
  const std::vector<int64_t> off = read_offsets(expert_offsets, experts, rows, op);
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* py = y.ptr<T>();
    const T* px = x.ptr<T>();
    const T* pw = w.ptr<T>();
    std::vector<Block>& blocks = block_scratch(0);
    for (int64_t e = 0; e < experts; ++e) add_blocks(blocks, e, off[e], off[e + 1]);
    run_blocks(blocks, threads_, [&](const Block& b) {
      dense_forward(py + b.begin * n, px + b.begin * k, pw + b.expert * n * k, b.end - b.begin, n,
                    k, false);
    });
  });
}

void CpuBackend::grouped_matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy,
                                         const Tensor& x, const Tensor& w,
                                         const Tensor& expert_offsets) {
  const char* op = "grouped_matmul_backward";
  cpu::check_cpu(x, op, "x");
  cpu::check_rank(x, 2, op, "x");
  cpu::check_dtype(w, x.dtype(), op, "w");
  cpu::check_rank(w, 3, op, "w");
  const int64_t rows = x.dim(0), k = x.dim(1), experts = w.dim(0), n = w.dim(1);
  cpu::check_shape_of(w, {experts, n, k}, op, "w");
  cpu::check_dtype(dy, x.dtype(), op, "dy");
  cpu::check_shape_of(dy, {rows, n}, op, "dy");
  cpu::check_dtype(dx, x.dtype(), op, "dx");
  cpu::check_shape_of(dx, {rows, k}, op, "dx");
  cpu::check_dtype(dw, x.dtype(), op, "dw");
  cpu::check_shape_of(dw, w.shape(), op, "dw");
  const std::vector<int64_t> off = read_offsets(expert_offsets, experts, rows, op);
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* pdx = dx.ptr<T>();
    T* pdw = dw.ptr<T>();
    const T* pdy = dy.ptr<T>();
    const T* px = x.ptr<T>();
    const T* pw = w.ptr<T>();
    // One task list (one parallel region): dw blocks first, tagged expert + E, then dx blocks.
    // dw[e] rows [begin, end) += dy_e[:, begin:end]^T x_e; experts without rows add nothing.
    std::vector<Block>& blocks = block_scratch(0);
    for (int64_t e = 0; e < experts; ++e) {
      if (off[e + 1] > off[e]) add_blocks(blocks, experts + e, 0, n);
    }
    for (int64_t e = 0; e < experts; ++e) add_blocks(blocks, e, off[e], off[e + 1]);
    run_blocks(blocks, threads_, [&](const Block& b) {
      if (b.expert < experts) {
        dense_dx(pdx + b.begin * k, pdy + b.begin * n, pw + b.expert * n * k, b.end - b.begin, n,
                 k, false);
      } else {
        const int64_t e = b.expert - experts;
        dense_dw_rows(pdw + e * n * k, pdy + off[e] * n, px + off[e] * k, off[e + 1] - off[e], n,
                      k, b.begin, b.end);
      }
    });
  });
}

}  // namespace moe
