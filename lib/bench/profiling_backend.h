// ProfilingBackend: a Backend decorator that forwards every op to another backend and, when
// enabled, measures the wall time of each op (synchronising before and after it, so asynchronous
// devices are timed per op). Used by moebench for the step-time breakdown by op family; the
// per-op synchronisation makes a profiled step slower than a plain one, so the benchmark times
// plain steps separately and uses the profile only for the shares.
#pragma once
#include <array>
#include <chrono>
#include <exception>
#include <map>
#include <string>

#include "backend/backend.h"

namespace moe {

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : inner_(inner) {}
  void set_enabled(bool on) { enabled_ = on; }
  void reset() { seconds_.fill(0.0); calls_.fill(0); }
  double seconds(OpKind op) const { return seconds_[static_cast<size_t>(op)]; }
  int64_t calls(OpKind op) const { return calls_[static_cast<size_t>(op)]; }
  // Seconds per op family ("matmul", "attention", "moe_dispatch", "losses", ...).
  std::map<std::string, double> family_seconds() const;

  std::string name() const override { return inner_.name(); }
  Device device() const override { return inner_.device(); }
  bool supports(OpKind op, DType dtype) const override { return inner_.supports(op, dtype); }
  void set_attention_impl(AttentionImpl impl) override {
    inner_.set_attention_impl(impl);
    attention_impl_ = impl;
  }
  Tensor empty(const Shape& shape, DType dtype) override { return inner_.empty(shape, dtype); }
  void upload(Tensor& dst, const void* host, size_t bytes) override {
    inner_.upload(dst, host, bytes);
  }
  void download(void* host, const Tensor& src, size_t bytes) override {
    inner_.download(host, src, bytes);
  }
  void copy(Tensor& dst, const Tensor& src) override { inner_.copy(dst, src); }
  void synchronize() override { inner_.synchronize(); }

  void fill(Tensor& y, double value) override {
    Timer t(*this, OpKind::fill);
    inner_.fill(y, value);
  }
  void convert(Tensor& y, const Tensor& x) override {
    Timer t(*this, OpKind::convert);
    inner_.convert(y, x);
  }
  void add(Tensor& y, const Tensor& a, const Tensor& b) override {
    Timer t(*this, OpKind::add);
    inner_.add(y, a, b);
  }
  void axpy(Tensor& y, const Tensor& x, float alpha) override {
    Timer t(*this, OpKind::axpy);
    inner_.axpy(y, x, alpha);
  }
  void scale(Tensor& y, float alpha) override {
    Timer t(*this, OpKind::scale);
    inner_.scale(y, alpha);
  }
  void embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) override {
    Timer t(*this, OpKind::embedding_forward);
    inner_.embedding_forward(y, ids, table);
  }
  void embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) override {
    Timer t(*this, OpKind::embedding_backward);
    inner_.embedding_backward(dtable, dy, ids);
  }
  void rms_norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) override {
    Timer t(*this, OpKind::rms_norm_forward);
    inner_.rms_norm_forward(y, rstd, x, w, eps);
  }
  void rms_norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, bool accumulate_dx) override {
    Timer t(*this, OpKind::rms_norm_backward);
    inner_.rms_norm_backward(dx, dw, dy, x, w, rstd, accumulate_dx);
  }
  void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) override {
    Timer t(*this, OpKind::matmul_forward);
    inner_.matmul_forward(y, x, w, accumulate);
  }
  void matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, bool accumulate_dx) override {
    Timer t(*this, OpKind::matmul_backward);
    inner_.matmul_backward(dx, dw, dy, x, w, accumulate_dx);
  }
  void rope_forward(Tensor& y, const Tensor& x, int64_t batch, int64_t seq, int64_t n_heads, int64_t head_dim, float theta) override {
    Timer t(*this, OpKind::rope_forward);
    inner_.rope_forward(y, x, batch, seq, n_heads, head_dim, theta);
  }
  void rope_backward(Tensor& dx, const Tensor& dy, int64_t batch, int64_t seq, int64_t n_heads, int64_t head_dim, float theta) override {
    Timer t(*this, OpKind::rope_backward);
    inner_.rope_backward(dx, dy, batch, seq, n_heads, head_dim, theta);
  }
  void rope_forward_offset(Tensor& y, const Tensor& x, const Tensor& offsets, int64_t batch, int64_t seq, int64_t n_heads, int64_t head_dim, float theta) override {
    Timer t(*this, OpKind::rope_forward_offset);
    inner_.rope_forward_offset(y, x, offsets, batch, seq, n_heads, head_dim, theta);
  }
  void attention_forward_cached(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& k_cache, const Tensor& v_cache, const Tensor& cache_start, const Tensor& cache_len, const AttnDims& dims) override {
    Timer t(*this, OpKind::attention_forward_cached);
    inner_.attention_forward_cached(out, q, k, v, k_cache, v_cache, cache_start, cache_len, dims);
  }
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const AttnDims& dims) override {
    Timer t(*this, OpKind::attention_forward);
    inner_.attention_forward(out, lse, q, k, v, dims);
  }
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse, const AttnDims& dims) override {
    Timer t(*this, OpKind::attention_backward);
    inner_.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, dims);
  }
  void swiglu_forward(Tensor& z, const Tensor& gate, const Tensor& up) override {
    Timer t(*this, OpKind::swiglu_forward);
    inner_.swiglu_forward(z, gate, up);
  }
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dz, const Tensor& gate, const Tensor& up) override {
    Timer t(*this, OpKind::swiglu_backward);
    inner_.swiglu_backward(dgate, dup, dz, gate, up);
  }
  void router_forward(Tensor& probs, Tensor& topk_idx, Tensor& topk_weight, const Tensor& logits, const Tensor& bias, bool norm_topk) override {
    Timer t(*this, OpKind::router_forward);
    inner_.router_forward(probs, topk_idx, topk_weight, logits, bias, norm_topk);
  }
  void router_backward(Tensor& dlogits, const Tensor& dprobs, const Tensor& dweight, const Tensor& probs, const Tensor& topk_idx, bool norm_topk) override {
    Timer t(*this, OpKind::router_backward);
    inner_.router_backward(dlogits, dprobs, dweight, probs, topk_idx, norm_topk);
  }
  void moe_dispatch_plan(Tensor& expert_offsets, Tensor& row_token, Tensor& token_row, const Tensor& topk_idx, int64_t n_experts) override {
    Timer t(*this, OpKind::moe_dispatch_plan);
    inner_.moe_dispatch_plan(expert_offsets, row_token, token_row, topk_idx, n_experts);
  }
  void moe_permute(Tensor& xp, const Tensor& x, const Tensor& row_token) override {
    Timer t(*this, OpKind::moe_permute);
    inner_.moe_permute(xp, x, row_token);
  }
  void moe_permute_backward(Tensor& dx, const Tensor& dxp, const Tensor& token_row) override {
    Timer t(*this, OpKind::moe_permute_backward);
    inner_.moe_permute_backward(dx, dxp, token_row);
  }
  void moe_unpermute(Tensor& y, const Tensor& yp, const Tensor& topk_weight, const Tensor& token_row, bool accumulate) override {
    Timer t(*this, OpKind::moe_unpermute);
    inner_.moe_unpermute(y, yp, topk_weight, token_row, accumulate);
  }
  void moe_unpermute_backward(Tensor& dyp, Tensor& dweight, const Tensor& dy, const Tensor& yp, const Tensor& topk_weight, const Tensor& token_row) override {
    Timer t(*this, OpKind::moe_unpermute_backward);
    inner_.moe_unpermute_backward(dyp, dweight, dy, yp, topk_weight, token_row);
  }
  void grouped_matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, const Tensor& expert_offsets) override {
    Timer t(*this, OpKind::grouped_matmul_forward);
    inner_.grouped_matmul_forward(y, x, w, expert_offsets);
  }
  void grouped_matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& expert_offsets) override {
    Timer t(*this, OpKind::grouped_matmul_backward);
    inner_.grouped_matmul_backward(dx, dw, dy, x, w, expert_offsets);
  }
  void cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& logits, const Tensor& targets) override {
    Timer t(*this, OpKind::cross_entropy_forward);
    inner_.cross_entropy_forward(loss, lse, logits, targets);
  }
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse, const Tensor& targets, float scale) override {
    Timer t(*this, OpKind::cross_entropy_backward);
    inner_.cross_entropy_backward(dlogits, logits, lse, targets, scale);
  }
  void lb_loss_forward(Tensor& loss, const Tensor& probs, const Tensor& topk_idx) override {
    Timer t(*this, OpKind::lb_loss_forward);
    inner_.lb_loss_forward(loss, probs, topk_idx);
  }
  void lb_loss_backward(Tensor& dprobs, const Tensor& probs, const Tensor& topk_idx, float coef) override {
    Timer t(*this, OpKind::lb_loss_backward);
    inner_.lb_loss_backward(dprobs, probs, topk_idx, coef);
  }
  void z_loss_forward(Tensor& loss, const Tensor& logits) override {
    Timer t(*this, OpKind::z_loss_forward);
    inner_.z_loss_forward(loss, logits);
  }
  void z_loss_backward(Tensor& dlogits, const Tensor& logits, float coef) override {
    Timer t(*this, OpKind::z_loss_backward);
    inner_.z_loss_backward(dlogits, logits, coef);
  }
  void sp_loss_forward(Tensor& loss, const Tensor& z, const Tensor& token_row) override {
    Timer t(*this, OpKind::sp_loss_forward);
    inner_.sp_loss_forward(loss, z, token_row);
  }
  void sp_loss_backward(Tensor& dz, const Tensor& z, const Tensor& token_row, float coef) override {
    Timer t(*this, OpKind::sp_loss_backward);
    inner_.sp_loss_backward(dz, z, token_row, coef);
  }
  void topk_mass_forward(Tensor& mass, const Tensor& probs, const Tensor& topk_idx) override {
    Timer t(*this, OpKind::topk_mass_forward);
    inner_.topk_mass_forward(mass, probs, topk_idx);
  }
  void topk_mass_backward(Tensor& dprobs, const Tensor& dmass, const Tensor& topk_idx) override {
    Timer t(*this, OpKind::topk_mass_backward);
    inner_.topk_mass_backward(dprobs, dmass, topk_idx);
  }
  void cp_loss_forward(Tensor& loss, const Tensor& masses) override {
    Timer t(*this, OpKind::cp_loss_forward);
    inner_.cp_loss_forward(loss, masses);
  }
  void cp_loss_backward(Tensor& dmasses, const Tensor& masses, float coef) override {
    Timer t(*this, OpKind::cp_loss_backward);
    inner_.cp_loss_backward(dmasses, masses, coef);
  }
  void expert_load_accumulate(Tensor& load, const Tensor& topk_idx) override {
    Timer t(*this, OpKind::expert_load_accumulate);
    inner_.expert_load_accumulate(load, topk_idx);
  }
  void balance_bias_update(Tensor& bias, const Tensor& load, float gamma) override {
    Timer t(*this, OpKind::balance_bias_update);
    inner_.balance_bias_update(bias, load, gamma);
  }
  void adamw_step(Tensor& param, Tensor& m, Tensor& v, Tensor& param_lowp, const Tensor& grad, const AdamWParams& hp) override {
    Timer t(*this, OpKind::adamw_step);
    inner_.adamw_step(param, m, v, param_lowp, grad, hp);
  }
  void global_norm_sq(Tensor& out, const Tensor& grad) override {
    Timer t(*this, OpKind::global_norm_sq);
    inner_.global_norm_sq(out, grad);
  }

 private:
  static constexpr size_t kOps = 0
#define MOE_OP(name) +1
#include "backend/ops.def"
#undef MOE_OP
      ;
  // Times one op when enabled: synchronise, run, synchronise.
  class Timer {
   public:
    Timer(ProfilingBackend& owner, OpKind op)
        : owner_(owner), op_(op), uncaught_(std::uncaught_exceptions()) {
      if (owner_.enabled_) {
        owner_.inner_.synchronize();
        start_ = std::chrono::steady_clock::now();
      }
    }
    ~Timer() noexcept(false) {
      // Never throw while an exception from the op itself is propagating.
      if (!owner_.enabled_ || std::uncaught_exceptions() > uncaught_) return;
      owner_.inner_.synchronize();
      std::chrono::duration<double> dt = std::chrono::steady_clock::now() - start_;
      owner_.seconds_[static_cast<size_t>(op_)] += dt.count();
      owner_.calls_[static_cast<size_t>(op_)] += 1;
    }

   private:
    ProfilingBackend& owner_;
    OpKind op_;
    int uncaught_;
    std::chrono::steady_clock::time_point start_;
  };

  Backend& inner_;
  bool enabled_ = false;
  std::array<double, kOps> seconds_{};
  std::array<int64_t, kOps> calls_{};
};

// The op family of an op, for reports: embedding, norm, matmul, rope, attention, swiglu, router,
// moe_dispatch, grouped_matmul, cross_entropy, aux_losses, optimizer, elementwise.
const char* op_family(OpKind op);

}  // namespace moe
