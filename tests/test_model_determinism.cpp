// Determinism of the whole model on the CPU backend: the same seed gives the same parameters;
// two forward/backward runs give bitwise-equal losses, logits and gradients; 1 and 2 threads give
// bitwise-equal results; the gradient is exactly linear in loss_scale (scaling by 2 is exact)
// and a second backward() accumulates onto the first.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace moe {
namespace {

struct RunResult {
  std::vector<double> losses;
  std::vector<float> logits, nll;
  std::vector<std::vector<float>> grads;
  std::vector<std::vector<int32_t>> topk;
};

ModelConfig wider_config() {
  ModelConfig c = test::tiny_deepseek_config();
  c.d_model = 32;
  c.n_layers = 4;
  c.n_experts = 8;
  c.top_k = 2;
  c.expert_ffn_dim = 24;
  c.ffn_dim = 48;
  c.vocab_size = 97;
  c.max_seq_len = 32;
  return c;
}

RunResult run_once(MoeModel& model, const Batch& batch, float loss_scale, int backwards = 1) {
  model.forward(batch);
  model.zero_grad();
  for (int i = 0; i < backwards; ++i) model.backward(loss_scale);
  RunResult r;
  const LossValues v = model.loss_values();
  r.losses = {v.lm, v.lb, v.z, v.sp, v.cp, v.total};
  r.logits = model.logits_host();
  r.nll = model.token_nll();
  for (Param& p : model.params()) r.grads.push_back(model.backend().download_vec<float>(p.grad));
  for (const LayerRouting& lr : model.routing()) r.topk.push_back(lr.topk_idx);
  return r;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_bitwise(const RunResult& a, const RunResult& b, MoeModel& model) {
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_TRUE(bits_equal(a.logits, b.logits));
  EXPECT_TRUE(bits_equal(a.nll, b.nll));
  EXPECT_EQ(a.topk, b.topk);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    EXPECT_TRUE(bits_equal(a.grads[i], b.grads[i])) << model.params()[i].name;
  }
}

TEST(ModelDeterminism, RepeatedRunsAndThreadCountsAreBitwiseEqual) {
  const ModelConfig cfg = wider_config();
  const LossConfig loss = test::all_losses("bias");
  const Batch batch = test::random_batch(3, 32, cfg.vocab_size, 5);
  auto be1 = make_backend("cpu", 1);
  auto be2 = make_backend("cpu", 2);
  MoeModel m1(cfg, loss, *be1, 3, 32);
  MoeModel m2(cfg, loss, *be2, 3, 32);
  m1.init_parameters(77);
  m2.init_parameters(77);
  const RunResult a = run_once(m1, batch, 1.0f);
  const RunResult b = run_once(m1, batch, 1.0f);
  const RunResult c = run_once(m2, batch, 1.0f);
  expect_bitwise(a, b, m1);
  expect_bitwise(a, c, m1);
  EXPECT_GT(a.losses[5], 0.0);
}

TEST(ModelDeterminism, InitDependsOnlyOnTheSeed) {
  const ModelConfig cfg = test::tiny_vanilla_config();
  auto be = make_backend("cpu");
  MoeModel a(cfg, test::all_losses(), *be, 1, 4), b(cfg, test::all_losses(), *be, 1, 4);
  a.init_parameters(3);
  b.init_parameters(3);
  for (size_t i = 0; i < a.params().size(); ++i) {
    EXPECT_TRUE(bits_equal(be->download_vec<float>(a.params()[i].value),
                           be->download_vec<float>(b.params()[i].value)))
        << a.params()[i].name;
  }
  b.init_parameters(4);
  const Param& q = b.param("model.layers.0.self_attn.q_proj.weight");
  EXPECT_FALSE(bits_equal(be->download_vec<float>(a.param(q.name).value),
                          be->download_vec<float>(q.value)));
  // Statistics of the draw: mean ~ 0, std ~ init_std; output projections scaled down.
  std::vector<float> e = be->download_vec<float>(a.param("model.embed_tokens.weight").value);
  double sum = 0, sq = 0;
  for (float x : e) { sum += x; sq += double(x) * x; }
  const double n = static_cast<double>(e.size());
  EXPECT_NEAR(sum / n, 0.0, 4 * cfg.init_std / std::sqrt(n));
  EXPECT_NEAR(std::sqrt(sq / n), cfg.init_std, 0.15 * cfg.init_std);
  std::vector<float> o = be->download_vec<float>(a.param("model.layers.1.self_attn.o_proj.weight").value);
  double osq = 0;
  for (float x : o) osq += double(x) * x;
  EXPECT_NEAR(std::sqrt(osq / o.size()), cfg.init_std / std::sqrt(2.0 * cfg.n_layers),
              0.25 * cfg.init_std / std::sqrt(2.0 * cfg.n_layers));
  for (float g : be->download_vec<float>(a.param("model.norm.weight").value)) EXPECT_EQ(g, 1.0f);
}

TEST(ModelDeterminism, GradientIsLinearInLossScaleAndAccumulates) {
  const ModelConfig cfg = test::tiny_deepseek_config();
  auto be = make_backend("cpu");
  MoeModel model(cfg, test::all_losses(), *be, 2, 8);
  model.init_parameters(9);
  const Batch batch = test::random_batch(2, 8, cfg.vocab_size, 13);
  const RunResult one = run_once(model, batch, 1.0f);
  const RunResult two = run_once(model, batch, 2.0f);
  const RunResult twice = run_once(model, batch, 1.0f, /*backwards=*/2);
  for (size_t i = 0; i < one.grads.size(); ++i) {
    std::vector<float> doubled = one.grads[i];
    for (float& g : doubled) g *= 2.0f;  // exact: scaling by 2 commutes with every float op
    EXPECT_TRUE(bits_equal(two.grads[i], doubled)) << model.params()[i].name;
    // Accumulating twice adds into the existing gradient inside the GEMMs (C += A B in
    // blocks), so it equals 2g only up to rounding.
    double max_abs = 0;
    for (float g : doubled) max_abs = std::max(max_abs, std::fabs(double(g)));
    for (size_t j = 0; j < doubled.size(); ++j) {
      ASSERT_NEAR(twice.grads[i][j], doubled[j], 1e-6 * max_abs) << model.params()[i].name;
    }
  }
}

TEST(ModelDeterminism, RecomputationIsBitwiseEqual) {
  // Shared activation buffers + re-run forward in backward must not change a single bit, for a
  // model with a dense layer, shared experts and balance = bias (the loads count once).
  const ModelConfig cfg = wider_config();
  const LossConfig loss = test::all_losses("bias");
  auto be = make_backend("cpu", 1);
  MoeModel plain(cfg, loss, *be, 2, 16, DType::kF32, /*recompute=*/false);
  MoeModel recompute(cfg, loss, *be, 2, 16, DType::kF32, /*recompute=*/true);
  plain.init_parameters(5);
  recompute.init_parameters(5);
  const Batch batch = test::random_batch(2, 16, cfg.vocab_size, 6);
  const RunResult a = run_once(plain, batch, 1.0f);
  const RunResult b = run_once(recompute, batch, 1.0f);
  expect_bitwise(a, b, plain);
  plain.update_balance_bias(0.01f);
  recompute.update_balance_bias(0.01f);
  const std::string bias = "model.layers.2.mlp.gate.e_score_correction_bias";
  EXPECT_EQ(be->download_vec<float>(plain.param(bias).value),
            be->download_vec<float>(recompute.param(bias).value));
  // The bias moved: the loads were accumulated (once) by the forward pass.
  std::vector<float> moved = be->download_vec<float>(plain.param(bias).value);
  EXPECT_NE(*std::max_element(moved.begin(), moved.end()), 0.0f);
}

TEST(ModelDeterminism, EvalForwardDoesNotCountExpertLoads) {
  const ModelConfig cfg = test::tiny_vanilla_config();
  auto be = make_backend("cpu", 1);
  MoeModel model(cfg, test::all_losses("bias"), *be, 2, 8);
  model.init_parameters(2);
  const Batch batch = test::random_batch(2, 8, cfg.vocab_size, 7);
  model.forward(batch, /*need_grad=*/false);
  model.update_balance_bias(0.5f);  // no loads counted: sign(0) = 0 leaves the bias at zero
  for (const Param& p : model.params()) {
    if (!p.trainable) {
      for (float b : be->download_vec<float>(p.value)) EXPECT_EQ(b, 0.0f) << p.name;
    }
  }
  EXPECT_THROW(model.backward(1.0f), Error);  // backward needs a need_grad forward
}

TEST(ModelDeterminism, SmallerMicroBatchThanCapacityMatchesAnExactFit) {
  // A model planned for 3 x 8 tokens runs a 2 x 5 batch on the first rows of its buffers; it
  // must compute what a model planned for exactly 2 x 5 computes.
  const ModelConfig cfg = test::tiny_deepseek_config();
  const LossConfig loss = test::all_losses("aux");
  auto be = make_backend("cpu", 1);
  MoeModel big(cfg, loss, *be, 3, 8), exact(cfg, loss, *be, 2, 5);
  big.init_parameters(21);
  exact.init_parameters(21);
  const Batch full = test::random_batch(3, 8, cfg.vocab_size, 8);
  const Batch small = test::random_batch(2, 5, cfg.vocab_size, 4);
  run_once(big, full, 1.0f);  // leave other values in the larger buffers first
  const RunResult a = run_once(big, small, 1.0f);
  const RunResult b = run_once(exact, small, 1.0f);
  expect_bitwise(a, b, big);
  EXPECT_EQ(a.logits.size(), static_cast<size_t>(2 * 5 * cfg.vocab_size));
  Batch too_big = test::random_batch(4, 8, cfg.vocab_size, 1);
  EXPECT_THROW(big.forward(too_big), Error);
  Batch bad_id = small;
  bad_id.inputs[3] = static_cast<int32_t>(cfg.vocab_size);
  EXPECT_THROW(big.forward(bad_id), Error);
}

}  // namespace
}  // namespace moe
