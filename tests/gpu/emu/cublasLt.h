// Emulator stand-in for <cublasLt.h>: the layouts, descriptors and preferences are recorded, the
// heuristic returns an algorithm that REQUIRES the pointer alignments the preference promised
// (256 bytes unless set: the real default), and cublasLtMatmul checks the layouts against each
// other and the pointers against that alignment before a plain column-major GEMM.
#pragma once
#include "cublas_v2.h"
struct EmuLtDesc {
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
};
struct EmuLtLayout {
  cudaDataType_t t;
  uint64_t rows, cols;
  int64_t ld;
};
struct EmuLtPref {
  uint32_t align[4] = {256, 256, 256, 256};
};
typedef void* cublasLtHandle_t;
typedef EmuLtDesc* cublasLtMatmulDesc_t;
typedef EmuLtLayout* cublasLtMatrixLayout_t;
typedef EmuLtPref* cublasLtMatmulPreference_t;
enum cublasLtMatmulDescAttributes_t {
  CUBLASLT_MATMUL_DESC_TRANSA = 3,
  CUBLASLT_MATMUL_DESC_TRANSB = 4
};
enum cublasLtMatmulPreferenceAttributes_t {
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8
};
struct cublasLtMatmulAlgo_t {
  uint32_t align[4];
};
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  int state;
};
inline int cublasLtCreate(cublasLtHandle_t* h) {
  *h = (void*)1;
  return 0;
}
inline int cublasLtDestroy(cublasLtHandle_t) { return 0; }
inline int cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t, cudaDataType_t) {
  *d = new EmuLtDesc;
  return 0;
}
inline int cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return 0;
}
inline int cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                          const void* v, size_t n) {
  if (n != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
  (a == CUBLASLT_MATMUL_DESC_TRANSA ? d->ta : d->tb) = *static_cast<const cublasOperation_t*>(v);
  return 0;
}
inline int cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType_t t, uint64_t r,
                                      uint64_t c, int64_t ld) {
  if (ld < (int64_t)r) return CUBLAS_STATUS_INVALID_VALUE;
  *l = new EmuLtLayout{t, r, c, ld};
  return 0;
}
inline int cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return 0;
}
inline int cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new EmuLtPref;
  return 0;
}
inline int cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return 0;
}
inline int cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                cublasLtMatmulPreferenceAttributes_t a,
                                                const void* v, size_t n) {
  if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)
    return n == 8 ? 0 : CUBLAS_STATUS_INVALID_VALUE;
  if (n != 4) return CUBLAS_STATUS_INVALID_VALUE;
  p->align[a - 5] = *static_cast<const uint32_t*>(v);
  return 0;
}
inline int cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t,
                                          cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                          cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                          cublasLtMatmulPreference_t p, int,
                                          cublasLtMatmulHeuristicResult_t* r, int* found) {
  // Emulates the real heuristic's contract: the chosen algorithm REQUIRES the alignments promised.
  for (int i = 0; i < 4; ++i) r->algo.align[i] = p->align[i];
  *found = 1;
  return 0;
}
inline int cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha,
                          const void* A, cublasLtMatrixLayout_t la, const void* B,
                          cublasLtMatrixLayout_t lb, const void* beta, const void* C,
                          cublasLtMatrixLayout_t lc, void* D, cublasLtMatrixLayout_t ld,
                          const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t) {
  const void* ptrs[4] = {A, B, C, D};
  for (int i = 0; i < 4; ++i)
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % algo->align[i]) return CUBLAS_STATUS_INVALID_VALUE;
  if (C != D || lc->rows != ld->rows || lc->cols != ld->cols || lc->ld != ld->ld)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool ta = d->ta == CUBLAS_OP_T, tb = d->tb == CUBLAS_OP_T;
  const int64_t m = lc->rows, n = lc->cols, k = ta ? la->rows : la->cols;
  if ((ta ? la->cols : la->rows) != (uint64_t)m || (tb ? lb->rows : lb->cols) != (uint64_t)n ||
      (tb ? lb->cols : lb->rows) != (uint64_t)k)
    return CUBLAS_STATUS_INVALID_VALUE;
  return emu_blas::gemm(ta, tb, m, n, k, *static_cast<const float*>(alpha), A, la->t, la->ld, B,
                        lb->t, lb->ld, *static_cast<const float*>(beta), D, lc->t, lc->ld);
}
