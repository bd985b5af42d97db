// Dense matrix products through cuBLASLt: y = x w^T with w stored [out, in] (row-major).
//
// Row-major to column-major: a row-major [M, K] buffer is the column-major [K, M] matrix, so
//   y[M,N] = x w^T      is  y^T (N x M) = op_T(w) * x^T     -> gemm(T, N, N, M, K)
//   dx[M,K] = dy w      is  dx^T (K x M) = w^T * dy^T       -> gemm(N, N, K, M, N)
//   dw[N,K] += dy^T x   is  dw^T (K x N) = x^T * op_T(dy^T)  -> gemm(N, T, K, N, M), beta = 1
// Precision: bf16 or f32 inputs (both operands the same dtype), fp32 accumulation
// (CUBLAS_COMPUTE_32F; no TF32, so f32 results match the CPU), output bf16 or f32.
// The algorithm comes from the cuBLASLt heuristic with the backend's 32 MiB workspace; if the
// heuristic offers none for a shape, cublasGemmEx (same precision) is used instead.
//
// Plans are cached (issue 17): descriptors, layouts and the chosen algorithm are made once per
// key (transposes, m, n, k, leading dimensions, dtypes, and each operand's alignment class) and
// reused, instead of a heuristic query on every one of the few hundred GEMMs of a step. The
// alignment class is the operand's address alignment clamped to 16 bytes (16, 8, 4 or 2): the
// heuristic is told that (never more than the truth, so a row view that starts inside an
// allocation still gets an algorithm that can read it), and every operand aligned to 16 bytes
// or more lands in the same class. So the same product gives the same algorithm, and the same
// bits, on an aligned buffer and on any 16-byte-aligned view; only an operand aligned to less
// than 16 bytes (a bf16 row view of a width that is not a multiple of 8) may get another
// algorithm and differ in the last bits. docs/gpu.md states this scope.
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kBF16: return CUDA_R_16BF;
    default: MOE_FAIL("matmul: the CUDA backend multiplies f32 or bf16, found {}", dtype_name(dtype));
  }
}

// RAII holders so an exception between create and destroy leaks nothing.
struct LtDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~LtDesc() { if (desc) cublasLtMatmulDescDestroy(desc); }
};
struct LtLayout {
  cublasLtMatrixLayout_t layout = nullptr;
  ~LtLayout() { if (layout) cublasLtMatrixLayoutDestroy(layout); }
};
struct LtPref {
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtPref() { if (pref) cublasLtMatmulPreferenceDestroy(pref); }
};

// Largest power of two (at most 16) dividing the address: the operand's alignment class.
// cuBLASLt's heuristic assumes 256-byte aligned operands unless told otherwise, and an algorithm
// picked under that assumption may reject (or misread) a row view that starts mid-allocation;
// 16 bytes is the widest vector access its kernels need, so a larger alignment is one class.
uint32_t alignment_class(const void* p) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 16;
  while (align > 1 && addr % align != 0) align /= 2;
  return align;
}

void check_matrix(const Tensor& t, int64_t rows, int64_t cols, const char* op, const char* name) {
  MOE_CHECK(t.ndim() >= 1 && t.numel() == rows * cols && t.dim(-1) == cols,
            "{}: {} expected [{}, {}], found {}", op, name, rows, cols, shape_str(t.shape()));
}

}  // namespace

struct CudaBackend::GemmPlan {
  LtDesc desc;
  LtLayout la, lb, lc;
  bool have_algo = false;  // false: cublasGemmEx
  cublasLtMatmulAlgo_t algo{};
};

const CudaBackend::GemmPlan& CudaBackend::gemm_plan(const GemmKey& key) {
  auto it = gemm_plans_.find(key);
  if (it != gemm_plans_.end()) return *it->second;
  const bool trans_a = key[0] != 0, trans_b = key[1] != 0;
  const int64_t m = key[2], n = key[3], k = key[4], lda = key[5], ldb = key[6], ldc = key[7];
  const cudaDataType_t ab = cuda_type(static_cast<DType>(key[8]));
  const cudaDataType_t ct = cuda_type(static_cast<DType>(key[9]));
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  auto plan = std::make_shared<GemmPlan>();
  MOE_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&plan->desc.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  MOE_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan->desc.desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                    &op_a, sizeof(op_a)));
  MOE_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan->desc.desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                    &op_b, sizeof(op_b)));
  // Stored shapes (column-major): A is m x k (or k x m when transposed), B is k x n (or n x k).
  MOE_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->la.layout, ab, trans_a ? k : m,
                                                trans_a ? m : k, lda));
  MOE_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->lb.layout, ab, trans_b ? n : k,
                                                trans_b ? k : n, ldb));
  MOE_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->lc.layout, ct, m, n, ldc));
  LtPref pref;
  MOE_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref.pref));
  MOE_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &gemm_workspace_bytes_,
      sizeof(gemm_workspace_bytes_)));
  const auto align_a = static_cast<uint32_t>(key[10]), align_b = static_cast<uint32_t>(key[11]);
  const auto align_c = static_cast<uint32_t>(key[12]);
  for (auto [attr, align] : {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}}) {
    MOE_CUBLASLT_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.pref, attr, &align, sizeof(align)));
  }
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(lt_, plan->desc.desc, plan->la.layout, plan->lb.layout,
                                     plan->lc.layout, plan->lc.layout, pref.pref, 1, &heur, &found);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
    plan->have_algo = true;
    plan->algo = heur.algo;
  }
  return *gemm_plans_.emplace(key, std::move(plan)).first->second;
}

void CudaBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                       const void* a, int64_t lda, const void* b, int64_t ldb, void* c,
                       int64_t ldc, DType ab_dtype, DType c_dtype, float beta) {
  if (m == 0 || n == 0) return;
  const float alpha = 1.0f;
  const GemmPlan& plan = gemm_plan(
      {trans_a ? 1 : 0, trans_b ? 1 : 0, m, n, k, lda, ldb, ldc, static_cast<int64_t>(ab_dtype),
       static_cast<int64_t>(c_dtype), alignment_class(a), alignment_class(b), alignment_class(c)});
  if (plan.have_algo) {
    MOE_CUBLASLT_CHECK(cublasLtMatmul(lt_, plan.desc.desc, &alpha, a, plan.la.layout, b,
                                      plan.lb.layout, &beta, c, plan.lc.layout, c, plan.lc.layout,
                                      &plan.algo, gemm_workspace_, gemm_workspace_bytes_,
                                      stream_));
    return;
  }
  MOE_CUBLAS_CHECK(cublasGemmEx(blas_, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, int(m), int(n), int(k),
                                &alpha, a, cuda_type(ab_dtype), int(lda), b, cuda_type(ab_dtype),
                                int(ldb), &beta, c, cuda_type(c_dtype), int(ldc),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) {
  MOE_CHECK(w.ndim() == 2, "matmul_forward: w expected [N, K], found {}", shape_str(w.shape()));
  int64_t n = w.dim(0), k = w.dim(1), m = k > 0 ? x.numel() / k : 0;
  check_matrix(x, m, k, "matmul_forward", "x");
  check_matrix(y, m, n, "matmul_forward", "y");
  MOE_CHECK(x.dtype() == w.dtype() && (y.dtype() == x.dtype() || y.dtype() == DType::kF32),
            "matmul_forward: expected x and w of one dtype and y of that dtype or f32, found "
            "y {} x {} w {}", dtype_name(y.dtype()), dtype_name(x.dtype()), dtype_name(w.dtype()));
  if (k == 0) {
    if (!accumulate) fill(y, 0.0);
    return;
  }
  gemm(true, false, n, m, k, w.data(), k, x.data(), k, y.data(), n, x.dtype(), y.dtype(),
       accumulate ? 1.0f : 0.0f);
  after_op("matmul_forward");
}

void CudaBackend::matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                                  const Tensor& w, bool accumulate_dx) {
  MOE_CHECK(w.ndim() == 2, "matmul_backward: w expected [N, K], found {}", shape_str(w.shape()));
  int64_t n = w.dim(0), k = w.dim(1), m = n > 0 ? dy.numel() / n : 0;
  check_matrix(dy, m, n, "matmul_backward", "dy");
  MOE_CHECK(dy.dtype() == w.dtype(), "matmul_backward: dy and w must share a dtype, found {} {}",
            dtype_name(dy.dtype()), dtype_name(w.dtype()));
  if (dx.defined()) {
    check_matrix(dx, m, k, "matmul_backward", "dx");
    MOE_CHECK(dx.dtype() == dy.dtype() || dx.dtype() == DType::kF32,
              "matmul_backward: dx must be {} or f32, found {}", dtype_name(dy.dtype()),
              dtype_name(dx.dtype()));
    if (n == 0) {
      if (!accumulate_dx) fill(dx, 0.0);
    } else {
      gemm(false, false, k, m, n, w.data(), k, dy.data(), n, dx.data(), k, dy.dtype(),
           dx.dtype(), accumulate_dx ? 1.0f : 0.0f);
    }
  }
  if (dw.defined()) {
    check_matrix(x, m, k, "matmul_backward", "x");
    check_shape(dw, w.shape(), "matmul_backward: dw");
    MOE_CHECK(x.dtype() == dy.dtype() && (dw.dtype() == DType::kF32 || dw.dtype() == x.dtype()),
              "matmul_backward: x must match dy ({}), dw must be f32 or {}; found x {} dw {}",
              dtype_name(dy.dtype()), dtype_name(x.dtype()), dtype_name(x.dtype()),
              dtype_name(dw.dtype()));
    if (m > 0) gemm(false, true, k, n, m, x.data(), k, dy.data(), n, dw.data(), k, x.dtype(),
                    dw.dtype(), 1.0f);
  }
  after_op("matmul_backward");
}

}  // namespace moe
