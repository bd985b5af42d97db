// MoeModel: the decoder-only MoE transformer of docs/model.md §1 with the losses of docs/model.md §2, as explicit
// forward and backward passes over the Backend interface. It owns the parameters (f32 master
// copies, HF names, [out, in]), their gradients, and every activation buffer, planned once for
// the largest micro-batch it was built for.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "config/config.h"

namespace moe {

struct Param {
  std::string name;    // Hugging Face name, e.g. "model.layers.0.mlp.experts.3.up_proj.weight"
  Tensor value;        // f32 master weights on the backend's device
  Tensor grad;         // f32, same shape; accumulated by backward()
  Tensor lowp;         // bf16 compute copy (CUDA bf16 runs only; undefined otherwise)
  bool decay = true;   // false for norm gains (and the balancing bias, which is not trained)
  bool trainable = true;  // false for mlp.gate.e_score_correction_bias
  // Trainable parameters are views into the model's flat parameter groups (param_groups()):
  // `group` indexes them and `group_offset` is the first element of this parameter there; -1 for
  // a parameter outside any group (the balancing bias).
  int64_t group = -1;
  int64_t group_offset = 0;
};

// One flat block of trainable parameters that share a weight-decay setting: values, grads and
// (bf16 runs) the bf16 copies, each one contiguous tensor that the group's Params are views of.
// Whole-group calls (zeroing the grads, the global norm, AdamW, the bf16 sync) replace one call
// per parameter tensor: on the CPU each call is an OpenMP parallel region, on CUDA a launch.
struct ParamGroup {
  Tensor value, grad, lowp;  // [numel]; lowp undefined unless the run is bf16
  bool decay = true;
};

// One micro-batch on the host: batch x seq token ids, targets shifted by one (-1 = ignored).
struct Batch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> inputs;   // [batch * seq]
  std::vector<int32_t> targets;  // [batch * seq]
};

// Loss terms of the last forward pass, unscaled (the coefficients are in LossConfig).
// lb, z, sp and cp are summed over MoE layers as in docs/model.md §2; total applies the coefficients of
// the enabled losses.
struct LossValues {
  double lm = 0, lb = 0, z = 0, sp = 0, cp = 0, total = 0;
  int64_t n_tokens = 0;  // predicted positions (targets >= 0)
};

// Host copies of one MoE layer's routing in the last forward pass, for metrics and eval.
struct LayerRouting {
  int64_t layer = 0;              // index of the transformer layer
  int64_t n_tokens = 0, n_experts = 0, top_k = 0;
  std::vector<float> probs;       // [N, E] softmax over all experts
  std::vector<int32_t> topk_idx;  // [N, k]
  double sp_value = 0;            // (1/N) sum_t sum_{pairs} cos^2 for this layer (R_sp term)
};

// Called during a forward pass for each MoE layer (its position among MoE layers) with that
// layer's top-k expert ids ([N, k] i32 on the backend's device), after routing and before the
// experts run; inference uses it to page expert weights in (infer/expert_cache.h).
using ExpertHook = std::function<void(int64_t moe_layer, const Tensor& topk_idx)>;

class MoeModel {
 public:
  // max_batch x seq is the largest micro-batch forward() will be given.
  MoeModel(const ModelConfig& model, const LossConfig& loss, Backend& backend, int64_t max_batch,
           int64_t seq, DType compute_dtype = DType::kF32);
  // recompute = true: activation recomputation (train.recompute). The layers share one set of
  // activation buffers and backward() re-runs each layer's forward from its saved input, so
  // activation memory no longer grows with depth; results are bitwise those of recompute = false.
  MoeModel(const ModelConfig& model, const LossConfig& loss, Backend& backend, int64_t max_batch,
           int64_t seq, DType compute_dtype, bool recompute);
  ~MoeModel();
  MoeModel(const MoeModel&) = delete;
  MoeModel& operator=(const MoeModel&) = delete;

  // Normal(0, init_std) for matrices (output projections scaled by 1/sqrt(2 * n_layers)),
  // ones for norm gains, zero balancing bias. Deterministic in the seed.
  void init_parameters(uint64_t seed);

  std::vector<Param>& params() { return params_; }
  // The flat groups the trainable parameters live in: decayed, then not decayed (norm gains).
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  Param& param(const std::string& name);  // throws naming the missing tensor
  int64_t n_params_total() const;          // counted once when embeddings are tied
  int64_t n_params_active() const;         // per token: k of E routed experts
  double flops_per_token() const;          // forward + backward (6 * active matmul params + attn)
  // Bytes of every activation and backward buffer the model allocated (weights, gradients and
  // optimizer state excluded); equals estimate_activation_memory() of param_count.h.
  int64_t activation_bytes() const;

  // Runs the forward pass and all enabled losses. With need_grad=false (eval) the activations
  // needed only for backward may be skipped.
  void forward(const Batch& batch, bool need_grad = true);
  // Accumulates d(total loss * loss_scale)/d(param) into every Param::grad.
  void backward(float loss_scale = 1.0f);
  void zero_grad();
  // Called by backward() each time a part's parameter gradients are final: n_layers after the
  // head (final norm, untied lm_head), l after transformer layer l, -1 after the embedding (last).
  // The trainer starts reducing finished gradient buckets there while backward continues.
  // An empty function removes the hook.
  void set_backward_hook(std::function<void(int64_t part)> hook);
  // The part (as above) whose backward finalises parameter `p`'s gradient.
  int64_t backward_part(const Param& p) const;

  // ---- eval: the incremental forward over a KV cache (no gradients; model/kv_cache.cpp) -------
  // Scoring several continuations of one context computes the context once: prefill_cache runs
  // contexts through every layer and keeps each layer's rotated keys and values (the KV cache);
  // forward_cached then runs only new tokens against them. The cache (keys and values of every
  // layer for max_batch x seq tokens, activation dtype) is allocated on first use, never by
  // training; activation_bytes() does not count it.
  //
  // Runs contexts.batch rows of contexts.seq tokens (targets ignored) and replaces the cache's
  // contents. No head: logits_host(), token_nll(), routing() and loss_values() are unavailable
  // until the next forward or forward_cached.
  //
  // row_capacity > 0 (generation) reserves that many cache positions per context row (at least
  // contexts.seq; contexts.batch * row_capacity must fit the model's capacity), so forward_cached
  // with append = true can add each step's tokens behind the row's prefix.
  void prefill_cache(const Batch& contexts, int64_t row_capacity = 0);
  // Runs `batch` (rows of new tokens, right-padded; targets as in forward) where row b continues
  // row ctx_row[b] of the last prefill_cache after its first ctx_len[b] tokens: new token t sits
  // at position ctx_len[b] + t and attends to those cached positions and causally to the row's
  // new tokens, so its logits are those forward() gives at that position of the concatenated
  // sequence (up to fp32 rounding). logits_host(), token_nll(), routing() and loss_values()
  // then describe the new tokens only. No backward.
  //
  // append = true (generation): every layer also writes the new tokens' keys and values into the
  // cache at positions ctx_len[b] .. ctx_len[b] + batch.seq - 1 of row ctx_row[b] (padding too:
  // the caller's next ctx_len decides what counts), so the next step can continue from there.
  // Needs ctx_len[b] + batch.seq <= the row capacity of the last prefill_cache.
  void forward_cached(const Batch& batch, const std::vector<int32_t>& ctx_row,
                      const std::vector<int32_t>& ctx_len, bool append = false);
  // Installs (or, with an empty function, removes) the hook of ExpertHook above.
  void set_expert_hook(ExpertHook hook);

  LossValues loss_values();                 // downloads the last forward's loss terms
  std::vector<float> token_nll();           // [batch * seq] per-position NLL (0 where ignored)
  std::vector<float> logits_host();         // [batch * seq, V] of the last forward
  std::vector<LayerRouting> routing();      // one entry per MoE layer, depth order
  // After a step with balance = bias: updates each layer's bias from the loads accumulated by
  // the forward passes since the last call, then clears the loads.
  void update_balance_bias(float gamma);
  // The per-expert loads update_balance_bias() will read, one [E] tensor per MoE layer: the
  // trainer sums them over data-parallel ranks first, so the bias sees the global load.
  std::vector<Tensor> balance_loads();

  // Refreshes every Param::lowp (bf16 compute copy) from its master value; call after changing
  // values outside adamw_step (loading weights, initialisation does it itself). No-op on f32/f64.
  void sync_lowp();
  DType compute_dtype() const;  // the activation dtype the model was built with

  const ModelConfig& config() const { return cfg_; }
  const LossConfig& loss_config() const { return loss_cfg_; }
  Backend& backend() { return backend_; }

 private:
  struct Impl;
  ModelConfig cfg_;
  LossConfig loss_cfg_;
  Backend& backend_;
  std::vector<Param> params_;
  std::vector<ParamGroup> groups_;
  std::function<void(int64_t)> backward_hook_;
  // Owned: a constructor that throws (a usage error on an overflowing size) must not leak it.
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
