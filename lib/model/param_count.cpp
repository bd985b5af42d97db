// Parameter counts, FLOPs and activation memory of a ModelConfig; conventions in param_count.h.
#include "model/param_count.h"

#include <algorithm>

#include "core/checked.h"
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

// Every formula below multiplies config sizes: it runs in CheckedInt, so a config whose counts
// overflow int64 (model.d_model = 1e15, say) is a usage error instead of a negative count.
constexpr const char* kParamsWhat =
    "model: the parameter count (from model.d_model, model.n_layers, model.n_experts, "
    "model.expert_ffn_dim, model.ffn_dim, model.n_heads, model.head_dim and the vocabulary)";
constexpr const char* kMemoryWhat =
    "activation memory estimate (from train.batch_size x train.seq_len, the vocabulary and the "
    "model sizes)";

}  // namespace

ParamCounts count_params(const ModelConfig& cfg, int64_t vocab_size) {
  using I = CheckedInt;
  const I V{resolve_vocab(cfg, vocab_size), kParamsWhat};
  const I d{cfg.d_model, kParamsWhat}, hd{cfg.resolved_head_dim(), kParamsWhat};
  const I H{cfg.n_heads, kParamsWhat}, KV{cfg.n_kv_heads, kParamsWhat};
  const I L{cfg.n_layers, kParamsWhat};
  const I E{cfg.n_experts, kParamsWhat}, k{cfg.top_k, kParamsWhat};
  const I f{cfg.expert_ffn_dim, kParamsWhat};
  const I S{cfg.n_shared_experts, kParamsWhat}, fs{cfg.resolved_shared_ffn_dim(), kParamsWhat};
  const I F{cfg.ffn_dim, kParamsWhat};
  const I n_moe{moe_layer_count(cfg), kParamsWhat}, n_dense = L - n_moe;

  const I embedding = V * d;
  const I lm_head = cfg.tie_embeddings ? I{0} : V * d;
  const I norms = 2 * d * L + d;
  const I attention = L * (H * hd * d + 2 * KV * hd * d + d * H * hd);
  const I router = n_moe * E * d;
  const I dense_ffn = n_dense * 3 * F * d;
  const I routed_experts = n_moe * 3 * E * f * d;
  const I routed_active = n_moe * 3 * k * f * d;
  const I shared_experts = n_moe * 3 * S * fs * d;
  const I total = embedding + lm_head + norms + attention + router + dense_ffn + routed_experts +
                  shared_experts;
  const I active = total - routed_experts + routed_active;
  // The output head is a [V, d] matmul per token whether or not it shares the embedding.
  const I matmul_active = attention + router + dense_ffn + routed_active + shared_experts + V * d;

  ParamCounts c;
  c.moe_layers = n_moe.value();
  c.embedding = embedding.value();
  c.lm_head = lm_head.value();
  c.norms = norms.value();
  c.attention = attention.value();
  c.router = router.value();
  c.dense_ffn = dense_ffn.value();
  c.routed_experts = routed_experts.value();
  c.routed_active = routed_active.value();
  c.shared_experts = shared_experts.value();
  c.total = total.value();
  c.active = active.value();
  c.matmul_active = matmul_active.value();
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
  using I = CheckedInt;
  const auto in = [](int64_t v) { return I{v, kMemoryWhat}; };
  const I V = in(resolve_vocab(cfg, vocab_size));
  const I a = in(static_cast<int64_t>(dtype_size(act_dtype)));
  const I s = in(act_dtype == DType::kF64 ? 8 : 4);  // router, statistics, losses
  const I i = in(4);                                  // i32 indices
  const I N = in(batch) * in(seq), d = in(cfg.d_model), hd = in(cfg.resolved_head_dim());
  const I qw = in(cfg.n_heads) * hd, kvw = in(cfg.n_kv_heads) * hd;
  const I E = in(cfg.n_experts), k = in(cfg.top_k), R = N * k, f = in(cfg.expert_ffn_dim);
  const I sw = in(cfg.n_shared_experts) * in(cfg.resolved_shared_ffn_dim());
  const I F = in(cfg.ffn_dim);
  const I n_moe = in(moe_layer_count(cfg)), n_dense = in(cfg.n_layers) - n_moe;

  // Saved per layer in every mode: the residual stream at the layer input; for a MoE layer its
  // routing (logits, probabilities, top-k weights and indices, top-k mass).
  const I hidden = a * N * d;
  const I routing = s * (2 * N * E + N * k + N) + i * N * k;
  // Attention block: both norm outputs, residual after attention, q, k, v, attention output;
  // norm statistics and the attention log-sum-exp.
  const I attn =
      a * (3 * N * d + 2 * N * qw + 2 * N * kvw) + s * (2 * N + in(cfg.n_heads) * N);
  // Experts: (an f32 copy of the norm output when activations are not f32), dispatch plan,
  // permuted input, gate, up, z and expert output; shared experts' gate, up, z.
  const I router_in = (act_dtype == DType::kBF16) ? s * N * d : I{0};
  const I experts = router_in + i * (E + 1 + R + N * k) +
                          a * (2 * R * d + 3 * R * f + 3 * N * sw);
  const I dense = a * 3 * N * F;

  I per_layer = 0, layers = 0, grad = 0;
  if (!recompute) {
    const I moe = hidden + attn + routing + experts, dense_layer = hidden + attn + dense;
    per_layer = std::max(n_moe > 0 ? moe : I{0}, n_dense > 0 ? dense_layer : I{0});
    layers = n_moe * moe + n_dense * dense_layer;
  } else {
    // One shared set of block buffers (+ the re-run layer's output); per layer only the input
    // and the routing.
    per_layer = hidden + (n_moe > 0 ? routing : I{0});
    layers = in(cfg.n_layers) * hidden + n_moe * routing + attn + hidden +
             (n_moe > 0 ? experts : I{0}) + (n_dense > 0 ? dense : I{0});
  }
  layers += hidden;  // the residual stream entering the head
  // Token ids and targets; final norm output and statistics, logits, per-token NLL and
  // log-sum-exp; the per-layer loss values and R_cp.
  const I head = i * 2 * N + a * (N * d + N * V) + s * 3 * N + s * (3 * n_moe + 1);
  if (need_grad) {
    // dlogits, the residual gradient and the norm-path scratch, dq/dk/dv + rope scratch, the
    // FFN / expert gradient scratch of one layer (reused across layers), dR_cp/dmasses.
    const I dense_scratch = n_dense > 0 ? a * 3 * N * F : I{0};
    const I moe_scratch =
        n_moe > 0 ? a * (3 * R * d + 3 * R * f + 3 * N * sw) + s * (2 * N * E + N * k) +
                        s * n_moe * N + (act_dtype == DType::kBF16 ? (s + a) * N * d : I{0})
                  : I{0};
    grad = a * (N * V + 3 * N * d + 2 * N * qw + 3 * N * kvw) + dense_scratch + moe_scratch;
  }
  ActivationMemory m;
  m.per_layer_bytes = per_layer.value();
  m.layers_bytes = layers.value();
  m.head_bytes = head.value();
  m.grad_bytes = grad.value();
  m.total_bytes = (layers + head + grad).value();
  return m;
}

}  // namespace moe
