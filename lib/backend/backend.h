// Backend: the one interface every compute device implements (cpu in lib/backend/cpu, cuda in
// kernels/). The model (lib/model) only ever talks to this interface.
//
// Conventions (see README "Adding an op"):
// - Argument order: outputs, then inputs, then attributes.
// - Backward: PARAMETER gradients ACCUMULATE (+=); ACTIVATION gradients OVERWRITE (=), unless an
//   explicit `accumulate` flag says otherwise. Loss ops' backward passes accumulate into the
//   gradient of their input (several losses share one dprobs / dlogits buffer).
// - Ops never allocate and never touch host memory: every output, workspace and scalar result is
//   a preallocated Tensor on the backend's device. Scalars (losses, norms) are shape-[1] f32
//   tensors the caller downloads when it wants them.
// - Shapes below use N = tokens in the micro-batch (B*T), d = model width, E = routed experts,
//   k = top-k, R = N*k dispatched rows, V = vocabulary.
// - Dtypes: the CPU backend computes in f32, and in f64 for the finite-difference tests; on the
//   CPU every floating-point tensor of one call has the same dtype (all f32 or all f64), including
//   those marked f32 below (rstd, lse, probs, losses). The CUDA
//   backend takes bf16 activations/weights where noted "act" and keeps router, losses, norms'
//   statistics, gradients of parameters and optimizer state in f32.
// - Every op is deterministic: no float atomics; reductions have a fixed order.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moe {

enum class OpKind {
#define MOE_OP(name) name,
#include "backend/ops.def"
#undef MOE_OP
};
const char* op_name(OpKind op);
std::vector<OpKind> all_ops();

// Dimensions of one attention call: q is [B*T, H*hd], k and v are [B*T, KV*hd].
struct AttnDims {
  int64_t batch = 1, seq = 1, heads = 1, kv_heads = 1, head_dim = 1;
};

struct AdamWParams {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
  int64_t step = 1;         // 1-based, for bias correction
  float grad_scale = 1.0f;  // multiplies the gradient first (clipping and averaging)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0"
  virtual Device device() const = 0;
  virtual bool supports(OpKind op, DType dtype) const = 0;

  // ---- memory and synchronisation ----------------------------------------------------------
  virtual Tensor empty(const Shape& shape, DType dtype) = 0;  // uninitialised
  Tensor zeros(const Shape& shape, DType dtype);
  virtual void upload(Tensor& dst, const void* host, size_t bytes) = 0;
  virtual void download(void* host, const Tensor& src, size_t bytes) = 0;
  virtual void copy(Tensor& dst, const Tensor& src) = 0;  // same dtype and numel
  virtual void synchronize() = 0;
  // Helpers on top of upload/download (host vectors of the tensor's dtype).
  template <typename T> void upload_vec(Tensor& dst, const std::vector<T>& v) {
    MOE_CHECK(static_cast<int64_t>(v.size()) == dst.numel(), "upload: {} values into {}", v.size(),
              shape_str(dst.shape()));
    upload(dst, v.data(), v.size() * sizeof(T));
  }
  template <typename T> std::vector<T> download_vec(const Tensor& src) {
    std::vector<T> v(static_cast<size_t>(src.numel()));
    download(v.data(), src, v.size() * sizeof(T));
    return v;
  }

  // ---- elementwise --------------------------------------------------------------------------
  virtual void fill(Tensor& y, double value) = 0;
  virtual void convert(Tensor& y, const Tensor& x) = 0;  // dtype conversion, same numel
  virtual void add(Tensor& y, const Tensor& a, const Tensor& b) = 0;  // y = a + b (y may alias)
  virtual void axpy(Tensor& y, const Tensor& x, float alpha) = 0;     // y += alpha * x
  virtual void scale(Tensor& y, float alpha) = 0;                     // y *= alpha

  // ---- embedding ----------------------------------------------------------------------------
  // y: [N, d] act; ids: [N] i32; table: [V, d]
  virtual void embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) = 0;
  // dtable: [V, d] += ; deterministic (no atomics: rows grouped by id or serial per column)
  virtual void embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) = 0;

  // ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w -------------------------------------------
  // y, x: [N, C]; w: [C]; rstd: [N] f32
  virtual void rms_norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w,
                                float eps) = 0;
  // dx: [N, C] overwritten, or added into when accumulate_dx (residual stream); dw: [C] +=
  virtual void rms_norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                                 const Tensor& w, const Tensor& rstd, bool accumulate_dx) = 0;

  // ---- dense matrix products: y = x w^T (w stored [out, in]) ---------------------------------
  // y: [M, N]; x: [M, K]; w: [N, K]. accumulate: y += x w^T instead of y = x w^T.
  virtual void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) = 0;
  // dx: [M, K] overwritten (added into when accumulate_dx; skipped if undefined); dw: [N, K] +=
  // (skipped if undefined).
  virtual void matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                               const Tensor& w, bool accumulate_dx) = 0;

  // ---- RoPE (rotate_half pairing: i with i + hd/2), positions t = 0..T-1 in each sequence ----
  // y, x: [B*T, n_heads*head_dim]; y may alias x.
  virtual void rope_forward(Tensor& y, const Tensor& x, int64_t batch, int64_t seq,
                            int64_t n_heads, int64_t head_dim, float theta) = 0;
  virtual void rope_backward(Tensor& dx, const Tensor& dy, int64_t batch, int64_t seq,
                             int64_t n_heads, int64_t head_dim, float theta) = 0;

  // RoPE at per-sequence offsets (eval: the incremental forward over a KV cache): row b*seq + t
  // is rotated as position offsets[b] + t. offsets: [batch] i32, >= 0, device-resident. y may
  // alias x. Forward only.
  virtual void rope_forward_offset(Tensor& y, const Tensor& x, const Tensor& offsets,
                                   int64_t batch, int64_t seq, int64_t n_heads,
                                   int64_t head_dim, float theta) = 0;

  // ---- causal attention with GQA: out = softmax(q k^T / sqrt(hd) + causal) v ------------------
  // out: [B*T, H*hd]; lse: [B, H, T] f32 (log-sum-exp of each score row, saved for backward)
  virtual void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const AttnDims& dims) = 0;
  // dq, dk, dv overwritten.
  virtual void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                  const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse,
                                  const AttnDims& dims) = 0;

  // Attention of new tokens that continue a cached prefix (eval: the incremental forward; no lse,
  // no backward). q, out: [B*T, H*hd] and k, v: [B*T, KV*hd] hold T new tokens per row, as in
  // attention_forward (dims.seq = T). Row b's prefix is rows cache_start[b] ..
  // cache_start[b] + cache_len[b] - 1 of k_cache / v_cache ([C, KV*hd], keys already rotated at
  // positions 0 .. cache_len[b] - 1). New token t of row b sits at position cache_len[b] + t and
  // attends to the whole prefix and to the row's new tokens t' <= t. cache_start, cache_len: [B]
  // i32, device-resident, 0 <= start, 0 <= len, start + len <= C. cache_len[b] = 0 is plain
  // causal attention.
  virtual void attention_forward_cached(Tensor& out, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& k_cache,
                                        const Tensor& v_cache, const Tensor& cache_start,
                                        const Tensor& cache_len, const AttnDims& dims) = 0;

  // ---- SwiGLU: z = silu(gate) * up ----------------------------------------------------------
  // z, gate, up: [R, F]
  virtual void swiglu_forward(Tensor& z, const Tensor& gate, const Tensor& up) = 0;
  // dgate, dup overwritten
  virtual void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dz, const Tensor& gate,
                               const Tensor& up) = 0;

  // ---- router: s = softmax(logits) (f32), A = TopK(s + bias), ties to the lower index --------
  // probs: [N, E] f32; topk_idx: [N, k] i32 in descending order of s + bias;
  // topk_weight: [N, k] f32 = s_e, or s_e / sum_{j in A} s_j when norm_topk;
  // logits: [N, E] f32; bias: [E] f32, or undefined for no bias.
  virtual void router_forward(Tensor& probs, Tensor& topk_idx, Tensor& topk_weight,
                              const Tensor& logits, const Tensor& bias, bool norm_topk) = 0;
  // dlogits: [N, E] overwritten = softmax-backward of (dprobs + the gate-weight path of
  // dweight). dprobs: [N, E] f32 gradient w.r.t. s from the losses (undefined = none).
  // dweight: [N, k] f32 gradient w.r.t. topk_weight.
  virtual void router_backward(Tensor& dlogits, const Tensor& dprobs, const Tensor& dweight,
                               const Tensor& probs, const Tensor& topk_idx, bool norm_topk) = 0;

  // ---- dispatch and combine: a stable counting sort of (token, slot) pairs by expert ---------
  // expert_offsets: [E+1] i32 exclusive scan of the counts; row_token: [R] i32, the token of
  // each dispatched row; token_row: [N, k] i32, the dispatched row of each (token, slot).
  // Rows of one expert keep token order, then slot order.
  virtual void moe_dispatch_plan(Tensor& expert_offsets, Tensor& row_token, Tensor& token_row,
                                 const Tensor& topk_idx, int64_t n_experts) = 0;
  // xp: [R, d] = x[row_token]
  virtual void moe_permute(Tensor& xp, const Tensor& x, const Tensor& row_token) = 0;
  // dx: [N, d] overwritten = sum over slots (in slot order) of dxp[token_row[t, s]]
  virtual void moe_permute_backward(Tensor& dx, const Tensor& dxp, const Tensor& token_row) = 0;
  // y: [N, d] (= or += when accumulate) sum_s topk_weight[t, s] * yp[token_row[t, s]]
  virtual void moe_unpermute(Tensor& y, const Tensor& yp, const Tensor& topk_weight,
                             const Tensor& token_row, bool accumulate) = 0;
  // dyp: [R, d] overwritten; dweight: [N, k] f32 overwritten = <dy[t], yp[row]>
  virtual void moe_unpermute_backward(Tensor& dyp, Tensor& dweight, const Tensor& dy,
                                      const Tensor& yp, const Tensor& topk_weight,
                                      const Tensor& token_row) = 0;

  // ---- grouped expert GEMM: rows [off[e], off[e+1]) use w[e] ---------------------------------
  // y: [R, N]; x: [R, K]; w: [E, N, K]; expert_offsets: [E+1] i32 (device-resident)
  virtual void grouped_matmul_forward(Tensor& y, const Tensor& x, const Tensor& w,
                                      const Tensor& expert_offsets) = 0;
  // dx: [R, K] overwritten; dw: [E, N, K] +=
  virtual void grouped_matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x,
                                       const Tensor& w, const Tensor& expert_offsets) = 0;

  // ---- cross-entropy over the vocabulary -----------------------------------------------------
  // loss: [N] f32 per-token NLL (0 where target < 0); lse: [N] f32; logits: [N, V];
  // targets: [N] i32, negative = ignored.
  virtual void cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& logits,
                                     const Tensor& targets) = 0;
  // dlogits: [N, V] overwritten = (softmax - onehot) * scale for valid tokens, 0 otherwise.
  virtual void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                      const Tensor& targets, float scale) = 0;

  // ---- auxiliary losses (docs/model.md §2). Forward writes the unscaled value of ONE MoE layer (or, for
  // cp, of all adjacent pairs) into loss[1] f32; backward ADDS coef * dL/dinput. -------------
  // L_lb = E * sum_e f_e P_e, f_e = count_e / (k N), P_e = mean_t s_t(e)
  virtual void lb_loss_forward(Tensor& loss, const Tensor& probs, const Tensor& topk_idx) = 0;
  virtual void lb_loss_backward(Tensor& dprobs, const Tensor& probs, const Tensor& topk_idx,
                                float coef) = 0;
  // L_z = mean_t (logsumexp_e logits_t)^2
  virtual void z_loss_forward(Tensor& loss, const Tensor& logits) = 0;
  virtual void z_loss_backward(Tensor& dlogits, const Tensor& logits, float coef) = 0;
  // R_sp (one layer) = (1/N) sum_t sum_{s != s'} cos(z[token_row[t,s]], z[token_row[t,s']])^2
  // z: [R, F] expert intermediate activations in dispatch order.
  virtual void sp_loss_forward(Tensor& loss, const Tensor& z, const Tensor& token_row) = 0;
  virtual void sp_loss_backward(Tensor& dz, const Tensor& z, const Tensor& token_row,
                                float coef) = 0;
  // mass: [N] f32 = sum_{e in A_t} s_t(e) (top-k mass, never renormalised)
  virtual void topk_mass_forward(Tensor& mass, const Tensor& probs, const Tensor& topk_idx) = 0;
  // dprobs += dmass broadcast onto the selected experts
  virtual void topk_mass_backward(Tensor& dprobs, const Tensor& dmass,
                                  const Tensor& topk_idx) = 0;
  // masses: [M, N] (one row per MoE layer, depth order);
  // R_cp = -(1/N) sum_t sum_{l=0}^{M-2} masses[l,t] * masses[l+1,t]
  virtual void cp_loss_forward(Tensor& loss, const Tensor& masses) = 0;
  // dmasses: [M, N] overwritten = coef * dR_cp/dmasses
  virtual void cp_loss_backward(Tensor& dmasses, const Tensor& masses, float coef) = 0;

  // ---- auxiliary-loss-free balancing ---------------------------------------------------------
  // load: [E] f32 += number of (token, slot) pairs routed to each expert
  virtual void expert_load_accumulate(Tensor& load, const Tensor& topk_idx) = 0;
  // bias[e] += gamma * sign(mean(load) - load[e])
  virtual void balance_bias_update(Tensor& bias, const Tensor& load, float gamma) = 0;

  // ---- optimizer -----------------------------------------------------------------------------
  // param, m, v: f32 master state; grad: f32. param_lowp: optional bf16 compute copy refreshed
  // after the update (undefined on CPU). Decoupled weight decay: p -= lr * wd * p.
  virtual void adamw_step(Tensor& param, Tensor& m, Tensor& v, Tensor& param_lowp,
                          const Tensor& grad, const AdamWParams& hp) = 0;
  // out: [1] f32 += sum(grad^2) (accumulated in double internally where the backend can)
  virtual void global_norm_sq(Tensor& out, const Tensor& grad) = 0;
};

// "cpu" (OpenMP + OpenBLAS) or "cuda" / "cuda:N". Throws moe::Error naming the available ones.
std::unique_ptr<Backend> make_backend(const std::string& spec, int threads = 0);
std::vector<std::string> available_backends();  // "cuda" only if built AND a device is present

}  // namespace moe
