// CpuBackend: the CPU implementation and the reference of every Backend op. Each op is a
// template over the element type (float for training, double for the finite-difference tests),
// parallelised with OpenMP over independent rows so results do not depend on the thread count,
// with matrix products through OpenBLAS (sgemm / dgemm).
//
// Files, one op family each (matching kernels/*.cu):
//   cpu_backend.cpp  memory, elementwise, convert      matmul.cpp    matmul, grouped_matmul
//   embedding.cpp    embedding                          norm.cpp      rms_norm
//   rope.cpp         rope (+ offset)                    attention.cpp attention (+ cached)
//   swiglu.cpp       swiglu                             router.cpp    router, topk_mass, balance
//   permute.cpp      dispatch plan, permute, unpermute  loss.cpp      cross_entropy, lb, z, sp, cp
//   optim.cpp        adamw, global_norm_sq
#pragma once
#include "backend/backend.h"

namespace moe {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads = 0);  // 0: all cores
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  bool supports(OpKind op, DType dtype) const override;
  int threads() const { return threads_; }

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
  void rms_norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) override;
  void rms_norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, bool accumulate_dx) override;
  void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) override;
  void matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, bool accumulate_dx) override;
  void rope_forward(Tensor& y, const Tensor& x, int64_t batch, int64_t seq, int64_t n_heads, int64_t head_dim, float theta) override;
  void rope_backward(Tensor& dx, const Tensor& dy, int64_t batch, int64_t seq, int64_t n_heads, int64_t head_dim, float theta) override;
  void rope_forward_offset(Tensor& y, const Tensor& x, const Tensor& offsets, int64_t batch, int64_t seq, int64_t n_heads, int64_t head_dim, float theta) override;
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const AttnDims& dims) override;
  void attention_forward_cached(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& k_cache, const Tensor& v_cache, const Tensor& cache_start, const Tensor& cache_len, const AttnDims& dims) override;
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse, const AttnDims& dims) override;
  void swiglu_forward(Tensor& z, const Tensor& gate, const Tensor& up) override;
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dz, const Tensor& gate, const Tensor& up) override;
  void router_forward(Tensor& probs, Tensor& topk_idx, Tensor& topk_weight, const Tensor& logits, const Tensor& bias, bool norm_topk) override;
  void router_backward(Tensor& dlogits, const Tensor& dprobs, const Tensor& dweight, const Tensor& probs, const Tensor& topk_idx, bool norm_topk) override;
  void moe_dispatch_plan(Tensor& expert_offsets, Tensor& row_token, Tensor& token_row, const Tensor& topk_idx, int64_t n_experts) override;
  void moe_permute(Tensor& xp, const Tensor& x, const Tensor& row_token) override;
  void moe_permute_backward(Tensor& dx, const Tensor& dxp, const Tensor& token_row) override;
  void moe_unpermute(Tensor& y, const Tensor& yp, const Tensor& topk_weight, const Tensor& token_row, bool accumulate) override;
  void moe_unpermute_backward(Tensor& dyp, Tensor& dweight, const Tensor& dy, const Tensor& yp, const Tensor& topk_weight, const Tensor& token_row) override;
  void grouped_matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, const Tensor& expert_offsets) override;
  void grouped_matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& expert_offsets) override;
  void cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& logits, const Tensor& targets) override;
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse, const Tensor& targets, float scale) override;
  void lb_loss_forward(Tensor& loss, const Tensor& probs, const Tensor& topk_idx) override;
  void lb_loss_backward(Tensor& dprobs, const Tensor& probs, const Tensor& topk_idx, float coef) override;
  void z_loss_forward(Tensor& loss, const Tensor& logits) override;
  void z_loss_backward(Tensor& dlogits, const Tensor& logits, float coef) override;
  void sp_loss_forward(Tensor& loss, const Tensor& z, const Tensor& token_row) override;
  void sp_loss_backward(Tensor& dz, const Tensor& z, const Tensor& token_row, float coef) override;
  void topk_mass_forward(Tensor& mass, const Tensor& probs, const Tensor& topk_idx) override;
  void topk_mass_backward(Tensor& dprobs, const Tensor& dmass, const Tensor& topk_idx) override;
  void cp_loss_forward(Tensor& loss, const Tensor& masses) override;
  void cp_loss_backward(Tensor& dmasses, const Tensor& masses, float coef) override;
  void expert_load_accumulate(Tensor& load, const Tensor& topk_idx) override;
  void balance_bias_update(Tensor& bias, const Tensor& load, float gamma) override;
  void adamw_step(Tensor& param, Tensor& m, Tensor& v, Tensor& param_lowp, const Tensor& grad, const AdamWParams& hp) override;
  void global_norm_sq(Tensor& out, const Tensor& grad) override;

 private:
  int threads_ = 1;
};

}  // namespace moe
