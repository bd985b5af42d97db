// CudaBackend: the CUDA implementation of every Backend op (lib/backend/backend.h).
//
// One stream, one cuBLASLt handle (plus a cuBLAS handle for the fallback path) and one GEMM
// workspace are created with the backend and live as long as it does. Every op is enqueued on the
// stream and returns without synchronising, except upload/download/synchronize. With debug_sync
// (env MOE_DEBUG_SYNC=1, which moetrain `--debug-sync` sets, or set_debug_sync(true)) the backend
// synchronises and checks for errors after every op, so a fault names the op that caused it.
//
// Memory: empty() calls cudaMalloc (activation buffers are planned once by the model, so this is
// not on the per-step path). A few ops need device scratch (partial sums of deterministic
// reductions, per-expert statistics); it comes from grow-only buffers owned by the backend, so
// after the first step nothing is allocated.
//
// The op implementations live in one .cu per op family, matching lib/backend/cpu/*.cpp:
//   cuda_backend.cu  memory, elementwise, convert   embedding.cu  norm.cu  rope.cu  swiglu.cu
//   matmul.cu        dense matmul (cuBLASLt)        grouped_matmul.cu  grouped expert GEMM
//   attention.cu     flash-style causal GQA (+ KV-cache forward)  router.cu  (router, topk_mass, load, bias)
//   permute.cu       dispatch plan, (un)permute     loss.cu    cross_entropy, lb, z, sp, cp
//   optim.cu         adamw, global_norm_sq
// Supported dtypes per op: kernels/README.md and supports().
#pragma once
#include <array>
#include <map>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "common.cuh"

namespace moe {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda:" + std::to_string(device_); }
  Device device() const override { return Device::kCuda; }
  bool supports(OpKind op, DType dtype) const override;
  void set_debug_sync(bool on) { debug_sync_ = on; }
  cudaStream_t stream() const { return stream_; }
  int device_index() const { return device_; }

  Tensor empty(const Shape& shape, DType dtype) override;
  void upload(Tensor& dst, const void* host, size_t bytes) override;
  void download(void* host, const Tensor& src, size_t bytes) override;
  void copy(Tensor& dst, const Tensor& src) override;
  void synchronize() override;
  void fill(Tensor& y, double value) override;
  void convert(Tensor& y, const Tensor& x) override;
  void add(Tensor& y, const Tensor& a, const Tensor& b) override;
  void axpy(Tensor& y, const Tensor& x, float alpha) override;
  void scale(Tensor& y, float alpha) override;
  void embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) override;
  void embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) override;
  void rms_norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w,
                        float eps) override;
  void rms_norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                         const Tensor& w, const Tensor& rstd, bool accumulate_dx) override;
  void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) override;
  void matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                       const Tensor& w, bool accumulate_dx) override;
  void rope_forward(Tensor& y, const Tensor& x, int64_t batch, int64_t seq, int64_t n_heads,
                    int64_t head_dim, float theta) override;
  void rope_backward(Tensor& dx, const Tensor& dy, int64_t batch, int64_t seq, int64_t n_heads,
                     int64_t head_dim, float theta) override;
  void rope_forward_offset(Tensor& y, const Tensor& x, const Tensor& offsets, int64_t batch,
                           int64_t seq, int64_t n_heads, int64_t head_dim, float theta) override;
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const AttnDims& dims) override;
  void attention_forward_cached(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& k_cache, const Tensor& v_cache,
                                const Tensor& cache_start, const Tensor& cache_len,
                                const AttnDims& dims) override;
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                          const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& lse, const AttnDims& dims) override;
  void swiglu_forward(Tensor& z, const Tensor& gate, const Tensor& up) override;
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dz, const Tensor& gate,
                       const Tensor& up) override;
  void router_forward(Tensor& probs, Tensor& topk_idx, Tensor& topk_weight, const Tensor& logits,
                      const Tensor& bias, bool norm_topk) override;
  void router_backward(Tensor& dlogits, const Tensor& dprobs, const Tensor& dweight,
                       const Tensor& probs, const Tensor& topk_idx, bool norm_topk) override;
  void moe_dispatch_plan(Tensor& expert_offsets, Tensor& row_token, Tensor& token_row,
                         const Tensor& topk_idx, int64_t n_experts) override;
  void moe_permute(Tensor& xp, const Tensor& x, const Tensor& row_token) override;
  void moe_permute_backward(Tensor& dx, const Tensor& dxp, const Tensor& token_row) override;
  void moe_unpermute(Tensor& y, const Tensor& yp, const Tensor& topk_weight,
                     const Tensor& token_row, bool accumulate) override;
  void moe_unpermute_backward(Tensor& dyp, Tensor& dweight, const Tensor& dy, const Tensor& yp,
                              const Tensor& topk_weight, const Tensor& token_row) override;
  void grouped_matmul_forward(Tensor& y, const Tensor& x, const Tensor& w,
                              const Tensor& expert_offsets) override;
  void grouped_matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                               const Tensor& w, const Tensor& expert_offsets) override;
  void cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& logits,
                             const Tensor& targets) override;
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                              const Tensor& targets, float scale) override;
  void lb_loss_forward(Tensor& loss, const Tensor& probs, const Tensor& topk_idx) override;
  void lb_loss_backward(Tensor& dprobs, const Tensor& probs, const Tensor& topk_idx,
                        float coef) override;
  void z_loss_forward(Tensor& loss, const Tensor& logits) override;
  void z_loss_backward(Tensor& dlogits, const Tensor& logits, float coef) override;
  void sp_loss_forward(Tensor& loss, const Tensor& z, const Tensor& token_row) override;
  void sp_loss_backward(Tensor& dz, const Tensor& z, const Tensor& token_row,
                        float coef) override;
  void topk_mass_forward(Tensor& mass, const Tensor& probs, const Tensor& topk_idx) override;
  void topk_mass_backward(Tensor& dprobs, const Tensor& dmass, const Tensor& topk_idx) override;
  void cp_loss_forward(Tensor& loss, const Tensor& masses) override;
  void cp_loss_backward(Tensor& dmasses, const Tensor& masses, float coef) override;
  void expert_load_accumulate(Tensor& load, const Tensor& topk_idx) override;
  void balance_bias_update(Tensor& bias, const Tensor& load, float gamma) override;
  void adamw_step(Tensor& param, Tensor& m, Tensor& v, Tensor& param_lowp, const Tensor& grad,
                  const AdamWParams& hp) override;
  void global_norm_sq(Tensor& out, const Tensor& grad) override;

 private:
  // Grow-only device scratch, one buffer per slot so one op can hold several at once.
  enum ScratchSlot { kScratchA = 0, kScratchB = 1, kScratchSum = 2, kScratchSlots = 3 };
  void* scratch(ScratchSlot slot, size_t bytes);
  double* sum_partials() {
    return static_cast<double*>(scratch(kScratchSum, cuda::kSumBlocks * sizeof(double)));
  }
  // Called at the end of every op: with debug_sync, synchronise and raise on any error.
  void after_op(const char* op);
  void check_device_errors(const char* where);
  // C = alpha * op(A) op(B) + beta * C in column-major cuBLAS terms (matmul.cu).
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* a,
            int64_t lda, const void* b, int64_t ldb, void* c, int64_t ldc, DType ab_dtype,
            DType c_dtype, float beta);
  // cuBLASLt plans (descriptors, layouts and the algorithm the heuristic chose), made on the
  // first GEMM of each key (transposes, sizes, leading dimensions, dtypes, alignment classes)
  // and reused for the life of the backend (matmul.cu).
  struct GemmPlan;
  using GemmKey = std::array<int64_t, 13>;
  const GemmPlan& gemm_plan(const GemmKey& key);
  std::map<GemmKey, std::shared_ptr<GemmPlan>> gemm_plans_;

  int device_ = 0;
  bool debug_sync_ = false;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* gemm_workspace_ = nullptr;
  size_t gemm_workspace_bytes_ = 0;
  int* error_flag_ = nullptr;  // device int, see cuda::DeviceError
  std::array<void*, kScratchSlots> scratch_ptr_{};
  std::array<size_t, kScratchSlots> scratch_bytes_{};
};

}  // namespace moe
