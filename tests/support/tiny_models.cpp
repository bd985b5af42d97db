// Tiny model configurations and batches for the whole-model tests.
#include "support/tiny_models.h"

#include "support/gradcheck.h"

namespace moe::test {

ModelConfig tiny_vanilla_config() {
  ModelConfig c;
  c.arch = "vanilla";
  c.vocab_size = 23;
  c.d_model = 12;
  c.n_layers = 3;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_dim = 16;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_ffn_dim = 10;
  c.n_shared_experts = 0;
  c.tie_embeddings = true;
  c.norm_topk_prob = false;
  c.max_seq_len = 16;
  c.init_std = 0.4;
  return c;
}

ModelConfig tiny_deepseek_config() {
  ModelConfig c;
  c.arch = "deepseek";
  c.vocab_size = 19;
  c.d_model = 12;
  c.n_layers = 3;
  c.dense_layers = 1;
  c.n_heads = 3;
  c.n_kv_heads = 1;
  c.head_dim = 6;
  c.ffn_dim = 14;
  c.n_experts = 6;
  c.top_k = 3;
  c.expert_ffn_dim = 5;
  c.n_shared_experts = 2;
  c.shared_expert_ffn_dim = 4;
  c.norm_topk_prob = true;
  c.tie_embeddings = false;
  c.max_seq_len = 16;
  c.init_std = 0.4;
  return c;
}

LossConfig all_losses(const std::string& balance) {
  LossConfig l;
  l.losses = {"lb", "z", "sp", "cp"};
  l.lb_coef = 0.3;
  l.z_coef = 0.05;
  l.sp_coef = 0.3;
  l.cp_coef = 0.5;
  l.balance = balance;
  l.bias_gamma = 0.01;
  return l;
}

Batch random_batch(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed) {
  Batch b;
  b.batch = batch;
  b.seq = seq;
  b.inputs = random_ints(static_cast<size_t>(batch * seq), static_cast<int32_t>(vocab), seed);
  b.targets = random_ints(static_cast<size_t>(batch * seq), static_cast<int32_t>(vocab),
                          seed + 1);
  for (size_t i = 3; i < b.targets.size(); i += 5) b.targets[i] = -1;
  return b;
}

}  // namespace moe::test
