// Emulator stand-in for <cublas_v2.h>: cublasGemmEx as a plain column-major GEMM (double
// accumulation) that rejects leading dimensions smaller than the stored rows, as cuBLAS does.
#pragma once
#include "cuda_bf16.h"
typedef int cublasStatus_t;
enum : int {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_NOT_SUPPORTED = 15
};
typedef void* cublasHandle_t;
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0 };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };
inline const char* cublasGetStatusName(int) { return "CUBLAS_EMU_ERROR"; }
inline const char* cublasGetStatusString(int) { return "emulated cublas error"; }
inline int cublasCreate(cublasHandle_t* h) {
  *h = (void*)1;
  return 0;
}
inline int cublasDestroy(cublasHandle_t) { return 0; }
inline int cublasSetStream(cublasHandle_t, cudaStream_t) { return 0; }
inline int cublasSetMathMode(cublasHandle_t, cublasMath_t) { return 0; }
namespace emu_blas {
inline float ld(const void* p, cudaDataType_t t, int64_t i) {
  return t == CUDA_R_32F ? static_cast<const float*>(p)[i]
                         : __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}
inline void st(void* p, cudaDataType_t t, int64_t i, float v) {
  if (t == CUDA_R_32F)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
}
// Column-major C(m x n) = alpha op(A) op(B) + beta C; A stored (ta ? k x m : m x k), lda >= rows.
inline int gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const void* A,
                cudaDataType_t at, int64_t lda, const void* B, cudaDataType_t bt, int64_t ldb,
                float beta, void* C, cudaDataType_t ct, int64_t ldc) {
  if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) return CUBLAS_STATUS_INVALID_VALUE;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) {
        float a = ta ? ld(A, at, p + i * lda) : ld(A, at, i + p * lda);
        float b = tb ? ld(B, bt, j + p * ldb) : ld(B, bt, p + j * ldb);
        s += double(a) * b;
      }
      float out = alpha * float(s);
      if (beta != 0.0f) out += beta * ld(C, ct, i + j * ldc);
      st(C, ct, i + j * ldc, out);
    }
  return 0;
}
}  // namespace emu_blas
inline int cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                        int k, const float* alpha, const void* A, cudaDataType_t at, int lda,
                        const void* B, cudaDataType_t bt, int ldb, const float* beta, void* C,
                        cudaDataType_t ct, int ldc, cublasComputeType_t, cublasGemmAlgo_t) {
  return emu_blas::gemm(ta == CUBLAS_OP_T, tb == CUBLAS_OP_T, m, n, k, *alpha, A, at, lda, B, bt,
                        ldb, *beta, C, ct, ldc);
}
