// Private state of MoeModel, shared by the files that implement it (model.cpp: construction and
// host accessors; init.cpp: initialisation; attention_block.cpp, ffn_block.cpp, moe_block.cpp:
// one block's forward and backward; forward.cpp / backward.cpp: the passes over all layers;
// kv_cache.cpp: the incremental eval forward over a KV cache).
//
// Every buffer is allocated once, for the largest micro-batch (cap_tokens = max_batch * seq
// tokens), and a forward pass over N <= cap_tokens tokens works on the first N rows of each
// ("views"). Dtypes: activations in act (the compute dtype); router logits/probabilities, norm
// and attention statistics, losses and loss gradients in stat (f32, or f64 when the compute
// dtype is f64); master weights and their gradients in stat as well; bf16 compute copies of the
// weights (Param::lowp) only when act is bf16.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "model/model.h"

namespace moe {

// A weight as the blocks see it: master value, gradient, and the tensor the matmuls read.
struct Weight {
  Tensor value, grad, lowp;
  const Tensor& compute() const { return lowp.defined() ? lowp : value; }
};

// The activations one layer saves for its backward pass (capacity-sized).
struct LayerActs {
  Tensor attn_norm, attn_rstd, q, k, v, attn_out, attn_lse;  // attention block
  Tensor mid;                                                // residual after attention
  Tensor ffn_norm, ffn_rstd;
  Tensor gate, up, z;             // dense FFN [cap, F] or routed experts [cap*k, f]
  Tensor router_in;               // f32 copy of ffn_norm (bf16 runs only)
  Tensor router_logits, probs, topk_idx, topk_weight;
  Tensor expert_offsets, row_token, token_row, x_perm, y_perm;
  Tensor shared_gate, shared_up, shared_z;
};

// Expert parallelism, one MoE layer (model/expert_parallel.cpp): the exchange plan of the last
// forward (the backward mirrors it) and this rank's experts' activations for the rows it
// received, in the order they arrive: by sending rank, within a rank by local expert.
struct EpLayer {
  std::vector<int64_t> send_rows, recv_rows;  // dispatched rows to / from each rank
  int64_t recv_total = 0;
  Tensor offsets;         // [P * (El + 1)] i32: per sending rank, its rows' local-expert offsets
  Tensor x, gate, up, z;  // [rows, d] / [rows, f], capacity `cap` rows
  int64_t cap = 0;
};

struct Layer {
  int64_t index = 0;
  bool is_moe = false;
  int64_t moe_index = -1;  // position among MoE layers
  Weight attn_gain, wq, wk, wv, wo, ffn_gain;
  Weight gate_w, up_w, down_w;  // dense [F, d] / [d, F], or experts [E, f, d] / [E, d, f]
  Weight router, shared_gate_w, shared_up_w, shared_down_w;
  Tensor balance_bias, expert_load;  // balance = bias only
  LayerActs act;
  EpLayer ep;  // expert parallelism only
};

// Expert parallelism, shared by the layers: the communicator and the scratch the exchanges and
// the experts' backward use (grown to the largest number of received rows seen).
struct EpState {
  Communicator* comm = nullptr;  // null: no expert parallelism
  int size = 1, rank = 0;
  int64_t local_experts = 0;     // El = E / size; this rank holds [rank * El, (rank + 1) * El)
  Tensor counts_send, counts_recv;  // [E] i32: rows per (rank, local expert)
  Tensor y, dy, dz, dz_sp, dgate, dup, dx, dx2;  // [cap, d] / [cap, f]
  int64_t cap = 0;
  double comm_seconds = 0;  // time spent in the all-to-alls so far
};

// Backward scratch, reused by every layer.
struct GradScratch {
  Tensor dlogits, dfinal, dh, dnorm, dattn, dq, dk, dk_rope, dv;
  Tensor dgate, dup, dz;                          // dense FFN
  Tensor dy_perm, dz_e, dgate_e, dup_e, dx_perm, dx_perm2, dweight, dprobs, drouter;
  Tensor drouter_in, dnorm_tmp;                   // bf16 runs: f32 router-path gradient
  Tensor dshared_gate, dshared_up, dshared_z;
  Tensor dmasses;                                 // [M * cap]
};

// The KV cache of the incremental eval forward (kv_cache.cpp): every layer's rotated keys and
// values of the last prefill_cache, row r * seq + t = position t of context row r; and the
// per-row spans (cache_start, cache_len) of the current forward_cached pass, device-resident.
struct KvCache {
  std::vector<Tensor> k, v;    // per layer [cap, KV*hd] act; empty until the first prefill
  Tensor span_start, span_len; // [cap] i32
  int64_t batch = 0, seq = 0;  // shape of the last prefill (0: none)
  int64_t stride = 0;          // cache rows per context row (seq, or the generation reserve)
  int32_t span_len_max = 0;    // max of span_len of the current pass (AttnDims::cache_len_max)
};

struct ModelState {
  DType act = DType::kF32, stat = DType::kF32;
  bool recompute = false;  // layers share activation buffers; backward re-runs each layer
  int64_t max_batch = 0, max_seq = 0, cap_tokens = 0;
  int64_t n_moe_layers = 0;
  int64_t vocab = 0;

  Weight embed, final_gain, lm_head;  // lm_head aliases embed when tied
  std::vector<Layer> layers;
  std::vector<Tensor> hidden;  // residual stream: hidden[l] enters layer l, hidden[L] the head

  Tensor ids, targets;                     // [cap] i32
  Tensor final_norm, final_rstd, logits;   // head
  Tensor token_nll, ce_lse;                // [cap] stat
  Tensor lb_values, z_values, sp_values;   // [M] stat, one per MoE layer
  Tensor cp_value;                         // [1] stat
  Tensor masses;                           // [M * cap] stat, top-k mass per layer and token
  GradScratch g;
  int64_t activation_bytes = 0;  // everything plan_buffers allocated
  Tensor recompute_out;  // [cap, d]: where a re-run layer writes its (unused) output
  KvCache kv;            // eval only (kv_cache.cpp)
  ExpertHook expert_hook;  // inference: called by moe_forward once a layer's top-k is known
  EpState ep;              // expert parallelism (comm null when off)

  // The last forward pass.
  int64_t batch = 0, seq = 0, n_tokens = 0, n_valid = 0;
  bool have_forward = false, forward_for_grad = false;

  int64_t rows() const { return n_tokens; }
  int64_t dispatched_rows(const ModelConfig& c) const { return n_tokens * c.top_k; }
};

struct MoeModel::Impl : ModelState {};

// Views of the first n rows (or, for flat per-layer arrays, row i of an [M, n] layout).
inline Tensor head_rows(const Tensor& t, int64_t n) { return t.rows(0, n); }
inline Tensor flat_row(const Tensor& flat, int64_t i, int64_t n) {
  return flat.slice_flat(i * n, {n});
}

// Allocates every activation and backward buffer (buffers.cpp); layers and n_moe_layers must be
// set up first.
void plan_buffers(ModelState& m, const ModelConfig& c, Backend& be);
// One layer's forward: attention, FFN norm, dense FFN or MoE (forward.cpp). With `cache`, the
// attention is the incremental one over m.kv (attention_forward_cached below).
void layer_forward(ModelState& m, const ModelConfig& c, const LossConfig& lc, Backend& be,
                   Layer& layer, const Tensor& h_in, Tensor& h_out, bool need_grad,
                   const KvCache* cache = nullptr);
// Shared by forward() and the KV-cache passes (forward.cpp): checks a host batch (targets only
// when check_targets) and uploads its ids (and targets) into m.ids / m.targets; sets m.batch,
// m.seq, m.n_tokens, m.n_valid.
void load_batch(ModelState& m, const ModelConfig& c, Backend& be, const Batch& batch,
                bool with_targets, const char* op);
// Embedding into hidden[0], then every layer (cache: see layer_forward).
void layers_forward(ModelState& m, const ModelConfig& c, const LossConfig& lc, Backend& be,
                    bool need_grad, const KvCache* cache);
// R_cp over the top-k masses, final norm, output head and per-token cross-entropy.
void head_forward(ModelState& m, const ModelConfig& c, Backend& be);

// out += SwiGLU(x) (dense FFN, shared experts) and its backward (ffn_block.cpp).
void swiglu_mlp_forward(Backend& be, Tensor& out, const Tensor& x, const Weight& gate_w,
                        const Weight& up_w, const Weight& down_w, Tensor& gate, Tensor& up,
                        Tensor& z);
void swiglu_mlp_backward(Backend& be, Tensor& dx, bool accumulate_dx, const Tensor& dout,
                         const Tensor& x, Weight& gate_w, Weight& up_w, Weight& down_w,
                         const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& dgate,
                         Tensor& dup, Tensor& dz);

// Block passes (one file each). The FFN blocks read the normalised input from act.ffn_norm and
// add into h_out (which already holds h_mid); their backward passes read dL/dh_out from g.dh and
// overwrite g.dnorm with dL/d(ffn_norm); the caller does the norm backward. `m` is the model's private state; `c` its configuration.
void attention_forward(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer,
                       const Tensor& h_in, Tensor& h_mid);
void attention_backward(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer,
                        const Tensor& h_in);
// The attention half over the KV cache: new tokens at positions cache.span_len[b] + t attend to
// their cached prefix (layer.index's keys and values in `cache`) and causally to each other.
void attention_forward_cached(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer,
                              const Tensor& h_in, Tensor& h_mid, const KvCache& cache);
void dense_ffn_forward(ModelState& m, Backend& be, Layer& layer, Tensor& h_out);
void dense_ffn_backward(ModelState& m, Backend& be, Layer& layer);
void moe_forward(ModelState& m, const ModelConfig& c, const LossConfig& lc, Backend& be,
                 Layer& layer, Tensor& h_out, bool need_grad);
void moe_backward(ModelState& m, const ModelConfig& c, const LossConfig& lc, Backend& be,
                  Layer& layer, float loss_scale);
// Expert parallelism (expert_parallel.cpp): the routed experts of one layer for the rows in
// act.x_perm (dispatched by act.expert_offsets over all E experts): rows go to the ranks that
// own their experts, the owners run their experts, and act.y_perm and act.z receive the results
// in this rank's dispatch order, as the local grouped GEMMs would have written them.
void ep_experts_forward(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer);
// Its mirror: from g.dy_perm (and, with sp_coef != 0, the sp gradient on act.z) to g.dx_perm;
// the expert weight gradients accumulate on the owners.
void ep_experts_backward(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer,
                         float sp_coef);

}  // namespace moe
