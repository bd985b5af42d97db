// Parameter counts and FLOPs of a small config, checked against hand-computed numbers.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/param_count.h"

namespace moe {
namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.arch = "deepseek";
  c.vocab_size = 10;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;  // head_dim 4
  c.ffn_dim = 16;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_ffn_dim = 6;
  c.n_shared_experts = 1;
  c.dense_layers = 1;
  return c;
}

TEST(ParamCount, HandComputedTiedDeepseek) {
  const ParamCounts c = count_params(small_config());
  EXPECT_EQ(c.embedding, 80);
  EXPECT_EQ(c.lm_head, 0);
  EXPECT_EQ(c.norms, 40);            // 2 * 8 * 2 layers + 8 final
  EXPECT_EQ(c.attention, 384);       // (64 + 32 + 32 + 64) * 2 layers
  EXPECT_EQ(c.router, 32);           // one MoE layer, 4 x 8
  EXPECT_EQ(c.dense_ffn, 384);       // one dense layer, 3 x 16 x 8
  EXPECT_EQ(c.routed_experts, 576);  // 3 x 4 x 6 x 8
  EXPECT_EQ(c.routed_active, 288);   // 3 x 2 x 6 x 8
  EXPECT_EQ(c.shared_experts, 144);  // 3 x 1 x 6 x 8
  EXPECT_EQ(c.total, 1640);
  EXPECT_EQ(c.active, 1352);
  EXPECT_EQ(c.matmul_active, 1312);  // attention + router + dense + active experts + head 80
  EXPECT_EQ(params_total(small_config()), 1640);
  EXPECT_EQ(params_active(small_config()), 1352);
  // 6 * 1312 + 6 * 2 layers * seq 5 * (2 heads * 4)
  EXPECT_DOUBLE_EQ(flops_per_token(small_config(), 0, 5), 8352.0);
}

TEST(ParamCount, UntiedHeadCountedAndVocabOverride) {
  ModelConfig cfg = small_config();
  cfg.tie_embeddings = false;
  const ParamCounts c = count_params(cfg, 20);
  EXPECT_EQ(c.embedding, 160);
  EXPECT_EQ(c.lm_head, 160);
  EXPECT_EQ(c.total, 1640 - 80 + 320);
  EXPECT_EQ(c.matmul_active, 1312 - 80 + 160);
}

TEST(ParamCount, MissingVocabIsAnError) {
  ModelConfig cfg = small_config();
  cfg.vocab_size = 0;
  EXPECT_THROW(count_params(cfg), Error);
}

TEST(ParamCount, ActivationMemoryScalesWithBatchAndDtype) {
  const ModelConfig cfg = small_config();
  const ActivationMemory one = estimate_activation_memory(cfg, 0, 1, 8, DType::kF32);
  const ActivationMemory two = estimate_activation_memory(cfg, 0, 2, 8, DType::kF32);
  const ActivationMemory eval = estimate_activation_memory(cfg, 0, 1, 8, DType::kF32, false);
  const ActivationMemory bf16 = estimate_activation_memory(cfg, 0, 1, 8, DType::kBF16);
  EXPECT_GT(one.total_bytes, 0);
  // Every term but the [E+1] expert offsets and the per-layer loss scalars (lb, z, sp of the
  // one MoE layer, and cp) is linear in the number of tokens.
  EXPECT_EQ(2 * one.total_bytes - two.total_bytes, 4 * (4 + 1) + 4 * (3 * 1 + 1));
  EXPECT_EQ(eval.grad_bytes, 0);
  EXPECT_LT(eval.total_bytes, one.total_bytes);
  EXPECT_LT(bf16.total_bytes, one.total_bytes);
  EXPECT_EQ(one.total_bytes, one.layers_bytes + one.head_bytes + one.grad_bytes);
  // Recomputation keeps less per layer, and saves more the deeper the model.
  const ActivationMemory rec = estimate_activation_memory(cfg, 0, 1, 8, DType::kF32, true, true);
  EXPECT_LT(rec.per_layer_bytes, one.per_layer_bytes);
  EXPECT_LT(rec.layers_bytes, one.layers_bytes);
  ModelConfig deep = cfg;
  deep.n_layers = 12;
  const int64_t saved2 = one.layers_bytes - rec.layers_bytes;
  const int64_t saved12 =
      estimate_activation_memory(deep, 0, 1, 8, DType::kF32, true, false).layers_bytes -
      estimate_activation_memory(deep, 0, 1, 8, DType::kF32, true, true).layers_bytes;
  EXPECT_GT(saved12, saved2);
}

}  // namespace
}  // namespace moe
