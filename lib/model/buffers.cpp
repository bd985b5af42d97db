// plan_buffers: every activation and backward buffer of a MoeModel, allocated once for the
// largest micro-batch (cap_tokens rows; R = cap_tokens * k dispatched rows).
//
// Without recomputation each layer keeps its own activations for backward. With recomputation
// (MoeModel's `recompute` constructor flag, for large configs on a GPU) all layers share ONE set
// of activation buffers (one for dense layers, one for MoE layers, the attention part common to
// both); only the residual stream at each layer's input, the routing of each MoE layer (probs,
// top-k, weights, logits: small, and what routing() reports) and the per-layer loss terms stay
// per layer. backward() then re-runs each layer's forward from its saved input just before that
// layer's backward (see backward.cpp), trading one extra forward for activation memory that no
// longer grows with depth.
#include "model/model_impl.h"

namespace moe {
namespace {

struct Dims {
  int64_t N, R, d, qw, kvw, E, k, f, sw, F, heads;
};

class Allocator {
 public:
  Allocator(Backend& be, DType act, DType stat) : be_(be), act_(act), stat_(stat) {}
  Tensor act(const Shape& s) { return counted(be_.empty(s, act_)); }
  Tensor stat(const Shape& s) { return counted(be_.empty(s, stat_)); }
  Tensor i32(const Shape& s) { return counted(be_.empty(s, DType::kI32)); }
  Tensor stat_zeros(const Shape& s) { return counted(be_.zeros(s, stat_)); }
  bool bf16() const { return act_ == DType::kBF16; }
  int64_t bytes() const { return bytes_; }

 private:
  Tensor counted(Tensor t) {
    bytes_ += static_cast<int64_t>(t.nbytes());
    return t;
  }
  int64_t bytes_ = 0;
  Backend& be_;
  DType act_, stat_;
};

void allocate_attention(LayerActs& a, Allocator& al, const Dims& x) {
  a.attn_norm = al.act({x.N, x.d});
  a.attn_rstd = al.stat({x.N});
  a.q = al.act({x.N, x.qw});
  a.k = al.act({x.N, x.kvw});
  a.v = al.act({x.N, x.kvw});
  a.attn_out = al.act({x.N, x.qw});
  a.attn_lse = al.stat({x.N * x.heads});
  a.mid = al.act({x.N, x.d});
  a.ffn_norm = al.act({x.N, x.d});
  a.ffn_rstd = al.stat({x.N});
}

void allocate_dense(LayerActs& a, Allocator& al, const Dims& x) {
  a.gate = al.act({x.N, x.F});
  a.up = al.act({x.N, x.F});
  a.z = al.act({x.N, x.F});
}

// The routing of one MoE layer: kept per layer even with recomputation.
void allocate_routing(LayerActs& a, Allocator& al, const Dims& x) {
  a.router_logits = al.stat({x.N, x.E});
  a.probs = al.stat({x.N, x.E});
  a.topk_idx = al.i32({x.N, x.k});
  a.topk_weight = al.stat({x.N, x.k});
}

void allocate_experts(LayerActs& a, Allocator& al, const Dims& x) {
  if (al.bf16()) a.router_in = al.stat({x.N, x.d});
  a.expert_offsets = al.i32({x.E + 1});
  a.row_token = al.i32({x.R});
  a.token_row = al.i32({x.N, x.k});
  a.x_perm = al.act({x.R, x.d});
  a.gate = al.act({x.R, x.f});
  a.up = al.act({x.R, x.f});
  a.z = al.act({x.R, x.f});
  a.y_perm = al.act({x.R, x.d});
  if (x.sw > 0) {
    a.shared_gate = al.act({x.N, x.sw});
    a.shared_up = al.act({x.N, x.sw});
    a.shared_z = al.act({x.N, x.sw});
  }
}

void allocate_grad_scratch(GradScratch& g, Allocator& al, const Dims& x, int64_t vocab,
                           int64_t n_dense, int64_t n_moe) {
  g.dlogits = al.act({x.N, vocab});
  g.dfinal = al.act({x.N, x.d});
  g.dh = al.act({x.N, x.d});
  g.dnorm = al.act({x.N, x.d});
  g.dattn = al.act({x.N, x.qw});
  g.dq = al.act({x.N, x.qw});
  g.dk = al.act({x.N, x.kvw});
  g.dk_rope = al.act({x.N, x.kvw});
  g.dv = al.act({x.N, x.kvw});
  if (n_dense > 0) {
    g.dgate = al.act({x.N, x.F});
    g.dup = al.act({x.N, x.F});
    g.dz = al.act({x.N, x.F});
  }
  if (n_moe == 0) return;
  g.dy_perm = al.act({x.R, x.d});
  // f32 even in bf16 runs: the sp gradient (~1e-3 of the main-path dz at the paper's scale, below
  // half a bf16 unit) is added here, so the sum must not be rounded before swiglu_backward reads
  // it (issue 17). The grouped GEMM writes its fp32 accumulator straight into it.
  g.dz_e = al.stat({x.R, x.f});
  g.dgate_e = al.act({x.R, x.f});
  g.dup_e = al.act({x.R, x.f});
  g.dx_perm = al.act({x.R, x.d});
  g.dx_perm2 = al.act({x.R, x.d});
  g.dweight = al.stat({x.N, x.k});
  g.dprobs = al.stat({x.N, x.E});
  g.drouter = al.stat({x.N, x.E});
  g.dmasses = al.stat({n_moe * x.N});
  if (al.bf16()) {
    g.drouter_in = al.stat({x.N, x.d});
    g.dnorm_tmp = al.act({x.N, x.d});
  }
  if (x.sw > 0) {
    g.dshared_gate = al.act({x.N, x.sw});
    g.dshared_up = al.act({x.N, x.sw});
    g.dshared_z = al.act({x.N, x.sw});
  }
}

}  // namespace

void plan_buffers(ModelState& m, const ModelConfig& c, Backend& be) {
  Dims x;
  x.N = m.cap_tokens;
  x.k = c.top_k;
  x.R = x.N * x.k;
  x.d = c.d_model;
  x.heads = c.n_heads;
  x.qw = c.n_heads * c.resolved_head_dim();
  x.kvw = c.n_kv_heads * c.resolved_head_dim();
  x.E = c.n_experts;
  x.f = c.expert_ffn_dim;
  x.sw = c.n_shared_experts * c.resolved_shared_ffn_dim();
  x.F = c.ffn_dim;
  const int64_t M = m.n_moe_layers, n_dense = c.n_layers - M;
  Allocator al(be, m.act, m.stat);

  for (int64_t l = 0; l <= c.n_layers; ++l) m.hidden.push_back(al.act({x.N, x.d}));
  if (m.recompute) {
    LayerActs shared_dense, shared_moe;
    allocate_attention(shared_dense, al, x);
    shared_moe = shared_dense;  // the attention part is common to both kinds
    if (n_dense > 0) allocate_dense(shared_dense, al, x);
    if (M > 0) allocate_experts(shared_moe, al, x);
    for (Layer& layer : m.layers) {
      layer.act = layer.is_moe ? shared_moe : shared_dense;
      if (layer.is_moe) allocate_routing(layer.act, al, x);
    }
    m.recompute_out = al.act({x.N, x.d});
  } else {
    for (Layer& layer : m.layers) {
      allocate_attention(layer.act, al, x);
      if (layer.is_moe) {
        allocate_routing(layer.act, al, x);
        allocate_experts(layer.act, al, x);
      } else {
        allocate_dense(layer.act, al, x);
      }
    }
  }

  m.ids = al.i32({x.N});
  m.targets = al.i32({x.N});
  m.final_norm = al.act({x.N, x.d});
  m.final_rstd = al.stat({x.N});
  m.logits = al.act({x.N, m.vocab});
  m.token_nll = al.stat({x.N});
  m.ce_lse = al.stat({x.N});
  if (M > 0) {
    m.lb_values = al.stat_zeros({M});
    m.z_values = al.stat_zeros({M});
    m.sp_values = al.stat_zeros({M});
    m.masses = al.stat({M * x.N});
  }
  m.cp_value = al.stat_zeros({1});
  allocate_grad_scratch(m.g, al, x, m.vocab, n_dense, M);
  m.activation_bytes = al.bytes();
}

}  // namespace moe
