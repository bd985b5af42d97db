// Parameter counts, FLOPs and activation memory of a ModelConfig; conventions in param_count.h.
#include "model/param_count.h"

#include <algorithm>

#include "core/error.h"

namespace moe {
namespace {

int64_t resolve_vocab(const ModelConfig& cfg, int64_t vocab_size) {
  int64_t v = vocab_size > 0 ? vocab_size : cfg.vocab_size;
  MOE_CHECK(v > 0, "parameter count needs a vocabulary size: model.vocab_size is {} and none was "
            "given", cfg.vocab_size);
  return v;
}

int64_t moe_layer_count(const ModelConfig& cfg) {
  return std::max<int64_t>(0, cfg.n_layers - std::min(cfg.dense_layers, cfg.n_layers));
}

}  // namespace

ParamCounts count_params(const ModelConfig& cfg, int64_t vocab_size) {
  const int64_t V = resolve_vocab(cfg, vocab_size);
  const int64_t d = cfg.d_model, hd = cfg.resolved_head_dim();
  const int64_t H = cfg.n_heads, KV = cfg.n_kv_heads, L = cfg.n_layers;
  const int64_t E = cfg.n_experts, k = cfg.top_k, f = cfg.expert_ffn_dim;
  const int64_t S = cfg.n_shared_experts, fs = cfg.resolved_shared_ffn_dim();
  const int64_t n_moe = moe_layer_count(cfg), n_dense = L - n_moe;

  ParamCounts c;
  c.moe_layers = n_moe;
  c.embedding = V * d;
  c.lm_head = cfg.tie_embeddings ? 0 : V * d;
  c.norms = 2 * d * L + d;
  c.attention = L * (H * hd * d + 2 * KV * hd * d + d * H * hd);
  c.router = n_moe * E * d;
  c.dense_ffn = n_dense * 3 * cfg.ffn_dim * d;
  c.routed_experts = n_moe * 3 * E * f * d;
  c.routed_active = n_moe * 3 * k * f * d;
  c.shared_experts = n_moe * 3 * S * fs * d;
  c.total = c.embedding + c.lm_head + c.norms + c.attention + c.router + c.dense_ffn +
            c.routed_experts + c.shared_experts;
  c.active = c.total - c.routed_experts + c.routed_active;
  // The output head is a [V, d] matmul per token whether or not it shares the embedding.
  c.matmul_active = c.attention + c.router + c.dense_ffn + c.routed_active + c.shared_experts +
                    V * d;
  return c;
}

int64_t params_total(const ModelConfig& cfg, int64_t vocab_size) {
  return count_params(cfg, vocab_size).total;
}

int64_t params_active(const ModelConfig& cfg, int64_t vocab_size) {
  return count_params(cfg, vocab_size).active;
}

double flops_per_token(const ModelConfig& cfg, int64_t vocab_size, int64_t seq) {
  const ParamCounts c = count_params(cfg, vocab_size);
  const double attn_width = static_cast<double>(cfg.n_heads * cfg.resolved_head_dim());
  return 6.0 * static_cast<double>(c.matmul_active) +
         6.0 * static_cast<double>(cfg.n_layers) * static_cast<double>(seq) * attn_width;
}

ActivationMemory estimate_activation_memory(const ModelConfig& cfg, int64_t vocab_size,
                                            int64_t batch, int64_t seq, DType act_dtype,
                                            bool need_grad, bool recompute) {
  const int64_t V = resolve_vocab(cfg, vocab_size);
  const int64_t a = static_cast<int64_t>(dtype_size(act_dtype));
  const int64_t s = act_dtype == DType::kF64 ? 8 : 4;  // router, statistics, losses
  const int64_t i = 4;                                  // i32 indices
  const int64_t N = batch * seq, d = cfg.d_model, hd = cfg.resolved_head_dim();
  const int64_t qw = cfg.n_heads * hd, kvw = cfg.n_kv_heads * hd;
  const int64_t E = cfg.n_experts, k = cfg.top_k, R = N * k, f = cfg.expert_ffn_dim;
  const int64_t sw = cfg.n_shared_experts * cfg.resolved_shared_ffn_dim();
  const int64_t F = cfg.ffn_dim;
  const int64_t n_moe = moe_layer_count(cfg), n_dense = cfg.n_layers - n_moe;

  // Saved per layer in every mode: the residual stream at the layer input; for a MoE layer its
  // routing (logits, probabilities, top-k weights and indices, top-k mass).
  const int64_t hidden = a * N * d;
  const int64_t routing = s * (2 * N * E + N * k + N) + i * N * k;
  // Attention block: both norm outputs, residual after attention, q, k, v, attention output;
  // norm statistics and the attention log-sum-exp.
  const int64_t attn =
      a * (3 * N * d + 2 * N * qw + 2 * N * kvw) + s * (2 * N + cfg.n_heads * N);
  // Experts: (an f32 copy of the norm output when activations are not f32), dispatch plan,
  // permuted input, gate, up, z and expert output; shared experts' gate, up, z.
  const int64_t router_in = (act_dtype == DType::kBF16) ? s * N * d : 0;
  const int64_t experts = router_in + i * (E + 1 + R + N * k) +
                          a * (2 * R * d + 3 * R * f + 3 * N * sw);
  const int64_t dense = a * 3 * N * F;

  ActivationMemory m;
  if (!recompute) {
    const int64_t moe = hidden + attn + routing + experts, dense_layer = hidden + attn + dense;
    m.per_layer_bytes = std::max(n_moe > 0 ? moe : 0, n_dense > 0 ? dense_layer : 0);
    m.layers_bytes = n_moe * moe + n_dense * dense_layer;
  } else {
    // One shared set of block buffers (+ the re-run layer's output); per layer only the input
    // and the routing.
    m.per_layer_bytes = hidden + (n_moe > 0 ? routing : 0);
    m.layers_bytes = cfg.n_layers * hidden + n_moe * routing + attn + hidden +
                     (n_moe > 0 ? experts : 0) + (n_dense > 0 ? dense : 0);
  }
  m.layers_bytes += hidden;  // the residual stream entering the head
  // Token ids and targets; final norm output and statistics, logits, per-token NLL and
  // log-sum-exp; the per-layer loss values and R_cp.
  m.head_bytes = i * 2 * N + a * (N * d + N * V) + s * 3 * N + s * (3 * n_moe + 1);
  if (need_grad) {
    // dlogits, the residual gradient and the norm-path scratch, dq/dk/dv + rope scratch, the
    // FFN / expert gradient scratch of one layer (reused across layers), dR_cp/dmasses.
    const int64_t dense_scratch = n_dense > 0 ? a * 3 * N * F : 0;
    const int64_t moe_scratch =
        n_moe > 0 ? a * (3 * R * d + 3 * R * f + 3 * N * sw) + s * (2 * N * E + N * k) +
                        s * n_moe * N + (act_dtype == DType::kBF16 ? (s + a) * N * d : 0)
                  : 0;
    m.grad_bytes = a * (N * V + 3 * N * d + 2 * N * qw + 3 * N * kvw) + dense_scratch +
                   moe_scratch;
  }
  m.total_bytes = m.layers_bytes + m.head_bytes + m.grad_bytes;
  return m;
}

}  // namespace moe
