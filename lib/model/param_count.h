// Parameter counts, FLOPs per token and an activation-memory estimate of the model of docs/model.md §1, as
// pure functions of a ModelConfig. Used by MoeModel, by `moetrain --dry-run` and by the
// throughput / MFU metrics, so every place reports the same numbers.
//
// Conventions:
// - Counts are of TRAINABLE parameters. The balancing bias mlp.gate.e_score_correction_bias
//   (E per MoE layer with balance: bias) is not trained and is not counted.
// - Tied embeddings are counted once (as the embedding); untied lm_head.weight is counted too.
// - Active parameters per token: everything a token touches — embedding row table and head
//   counted in full (as is usual in MoE papers), attention, norms, the router, the dense FFNs,
//   the shared experts and k of the E routed experts of every MoE layer.
// - FLOPs per token for forward + backward (Kaplan et al. 2020 / PaLM convention):
//     6 * (matmul parameters active per token) + 6 * n_layers * seq * (n_heads * head_dim)
//   where the matmul parameters are the attention projections, the router, the dense FFN, the
//   shared experts, k routed experts and the output head (V*d, also when tied; the embedding
//   lookup is not a matmul and norms are not counted). The second term is the attention
//   scores and the attention-weighted values, 2 matmuls x 2 FLOPs x 3 (fwd+bwd) x H*hd per
//   key position = 12 * L * seq * H*hd for full attention, halved for the causal mask.
#pragma once
#include <cstdint>

#include "config/config.h"
#include "core/tensor.h"

namespace moe {

struct ParamCounts {
  int64_t embedding = 0;       // V*d
  int64_t lm_head = 0;         // V*d when untied, else 0
  int64_t norms = 0;           // 2*d per layer + d final
  int64_t attention = 0;       // q, k, v, o of all layers
  int64_t router = 0;          // E*d per MoE layer
  int64_t dense_ffn = 0;       // 3*F*d per dense layer
  int64_t routed_experts = 0;  // 3*E*f*d per MoE layer (all experts)
  int64_t routed_active = 0;   // 3*k*f*d per MoE layer
  int64_t shared_experts = 0;  // 3*S*fs*d per MoE layer
  int64_t total = 0;
  int64_t active = 0;
  int64_t matmul_active = 0;   // active parameters that take part in a matmul per token
  int64_t moe_layers = 0;
};

// vocab_size 0: cfg.vocab_size. Throws moe::Error if no positive vocabulary size is known.
ParamCounts count_params(const ModelConfig& cfg, int64_t vocab_size = 0);
int64_t params_total(const ModelConfig& cfg, int64_t vocab_size = 0);
int64_t params_active(const ModelConfig& cfg, int64_t vocab_size = 0);
// Forward + backward FLOPs per token for sequences of length seq (formula above).
double flops_per_token(const ModelConfig& cfg, int64_t vocab_size, int64_t seq);

// Activation memory of one micro-batch of batch x seq tokens as MoeModel plans it: the tensors
// saved for backward per layer, the logits, and the transient gradient buffers. Activations are
// counted in act_dtype; router logits/probs, norm statistics and losses in f32 (as on CUDA bf16
// runs; on CPU f32 runs act_dtype is f32 anyway); index tensors in i32. recompute: the layers
// share one set of block buffers (MoeModel's recompute mode), keeping only their inputs and
// routing.
struct ActivationMemory {
  int64_t per_layer_bytes = 0;  // kept per layer (largest kind); without recompute, all of it
  int64_t layers_bytes = 0;     // sum over all layers
  int64_t head_bytes = 0;       // final norm, logits, per-token loss
  int64_t grad_bytes = 0;       // transient backward buffers (0 when need_grad is false)
  int64_t total_bytes = 0;
};
ActivationMemory estimate_activation_memory(const ModelConfig& cfg, int64_t vocab_size,
                                            int64_t batch, int64_t seq, DType act_dtype,
                                            bool need_grad = true, bool recompute = false);

}  // namespace moe
