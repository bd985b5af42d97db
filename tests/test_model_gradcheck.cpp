// Finite differences in double on the WHOLE model: d(total loss)/d(parameter) from backward()
// against central differences of forward(), on sampled coordinates of every trainable tensor
// (always including the coordinate of the largest analytic gradient), for a tiny vanilla and a
// tiny deepseek model (dense layer, shared experts, norm_topk_prob, untied head, balance = bias
// with a non-zero bias) with every loss on, computed in f64.
//
// Top-k selection is piecewise constant: a coordinate whose +-eps perturbation changes any
// layer's top-k set is skipped and counted; the test fails if more than 5% are skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace moe {
namespace {

std::vector<std::vector<int32_t>> topk_sets(MoeModel& model) {
  std::vector<std::vector<int32_t>> out;
  for (const LayerRouting& r : model.routing()) out.push_back(r.topk_idx);
  return out;
}

struct GradcheckStats {
  int checked = 0, skipped = 0, failed = 0;
};

// Checks the coordinate of the largest gradient plus `random_coords` random ones per tensor.
// The batch is 2 x seq tokens.
void gradcheck_model(const ModelConfig& cfg, const LossConfig& loss, uint64_t seed,
                     int random_coords = 3, int64_t seq = 7) {
  auto be = make_backend("cpu", 1);  // tiny tensors: threads only add wake-up latency
  const int64_t B = 2, T = seq;
  MoeModel model(cfg, loss, *be, B, T, DType::kF64);
  model.init_parameters(seed);
  if (loss.balance == "bias") {  // a non-zero bias, so it changes some choices
    for (Param& p : model.params()) {
      if (!p.trainable) {
        test::upload_values(*be, p.value, test::random_normal(p.value.numel(), seed + 9, 0.05));
      }
    }
  }
  const Batch batch = test::random_batch(B, T, cfg.vocab_size, seed + 1);
  model.forward(batch);
  model.zero_grad();
  model.backward(1.0f);
  const auto base_topk = topk_sets(model);

  const double eps = 1e-6, atol = 1e-7, rtol = 1e-5;
  GradcheckStats stats;
  test::Rng rng(seed + 2);
  for (Param& p : model.params()) {
    const std::vector<double> grad = test::to_host(*be, p.grad);
    if (!p.trainable) {
      for (double g : grad) ASSERT_EQ(g, 0.0) << p.name << " is not trainable but got a gradient";
      continue;
    }
    // Every tensor must take part (a zero gradient would make the check vacuous).
    size_t argmax = 0;
    for (size_t i = 0; i < grad.size(); ++i) {
      if (std::fabs(grad[i]) > std::fabs(grad[argmax])) argmax = i;
    }
    ASSERT_GT(std::fabs(grad[argmax]), 0.0) << p.name << " has an all-zero gradient";
    std::vector<size_t> coords = {argmax};
    for (int j = 0; j < random_coords; ++j) coords.push_back(static_cast<size_t>(rng.below(grad.size())));

    std::vector<double> value = test::to_host(*be, p.value);
    for (size_t i : coords) {
      const double saved = value[i];
      double losses[2];
      bool routing_changed = false;
      for (int side = 0; side < 2; ++side) {
        value[i] = saved + (side == 0 ? eps : -eps);
        test::upload_values(*be, p.value, value);
        model.forward(batch, /*need_grad=*/false);
        losses[side] = model.loss_values().total;
        routing_changed = routing_changed || topk_sets(model) != base_topk;
      }
      value[i] = saved;
      test::upload_values(*be, p.value, value);
      if (routing_changed) {
        ++stats.skipped;
        continue;
      }
      ++stats.checked;
      const double fd = (losses[0] - losses[1]) / (2 * eps);
      if (!(std::fabs(fd - grad[i]) <= atol + rtol * std::fabs(fd))) {
        ++stats.failed;
        ADD_FAILURE() << p.name << "[" << i << "]: backward " << grad[i] << ", finite difference "
                      << fd << " (diff " << fd - grad[i] << ")";
      }
    }
  }
  EXPECT_EQ(stats.failed, 0);
  EXPECT_GT(stats.checked, 80);
  EXPECT_LE(stats.skipped * 20, stats.checked + stats.skipped)
      << stats.skipped << " coordinates skipped because the perturbation changed the routing";
}

TEST(ModelGradcheck, TinyVanillaAllLossesF64) {
  gradcheck_model(test::tiny_vanilla_config(), test::all_losses("aux"), 11);
}

TEST(ModelGradcheck, TinyDeepseekAllLossesBiasBalanceF64) {
  gradcheck_model(test::tiny_deepseek_config(), test::all_losses("bias"), 23);
}

TEST(ModelGradcheck, EachLossAloneVanillaF64) {
  // Each aux loss on its own, so a term cannot hide behind a larger one.
  for (const char* name : {"lb", "z", "sp", "cp"}) {
    SCOPED_TRACE(name);
    LossConfig l = test::all_losses("aux");
    l.losses = {name};
    gradcheck_model(test::tiny_vanilla_config(), l, 31, /*random_coords=*/1);
  }
}

TEST(ModelGradcheck, EdgeCasesTopOneAndAllDenseF64) {
  {
    // 32 tokens, so every expert of every layer receives some (checked by gradcheck_model).
    SCOPED_TRACE("top-1 routing with norm_topk_prob (R_sp has no pairs, gate weight is 1)");
    ModelConfig c = test::tiny_vanilla_config();
    c.top_k = 1;
    c.norm_topk_prob = true;
    gradcheck_model(c, test::all_losses("aux"), 43, /*random_coords=*/1, /*seq=*/16);
  }
  {
    SCOPED_TRACE("every layer dense (no MoE layer, no aux loss)");
    ModelConfig c = test::tiny_deepseek_config();
    c.dense_layers = c.n_layers;
    gradcheck_model(c, test::all_losses("aux"), 43, /*random_coords=*/3);
  }
}

TEST(ModelGradcheck, NoMoeLayersMeansNoAuxLossesAndNoRouting) {
  ModelConfig c = test::tiny_deepseek_config();
  c.dense_layers = c.n_layers;
  auto be = make_backend("cpu", 1);
  MoeModel model(c, test::all_losses("aux"), *be, 1, 6, DType::kF64);
  model.init_parameters(1);
  model.forward(test::random_batch(1, 6, c.vocab_size, 2));
  const LossValues v = model.loss_values();
  EXPECT_EQ(v.lb, 0.0);
  EXPECT_EQ(v.z, 0.0);
  EXPECT_EQ(v.sp, 0.0);
  EXPECT_EQ(v.cp, 0.0);
  EXPECT_EQ(v.total, v.lm);
  EXPECT_GT(v.lm, 0.0);
  EXPECT_TRUE(model.routing().empty());
}

TEST(ModelGradcheck, TopOneHasZeroSpecializationLoss) {
  ModelConfig c = test::tiny_vanilla_config();
  c.top_k = 1;
  auto be = make_backend("cpu", 1);
  MoeModel model(c, test::all_losses("aux"), *be, 1, 6, DType::kF64);
  model.init_parameters(1);
  model.forward(test::random_batch(1, 6, c.vocab_size, 2));
  EXPECT_EQ(model.loss_values().sp, 0.0);
  EXPECT_LT(model.loss_values().cp, 0.0);  // -(1/T) sum of products of positive masses
  for (const LayerRouting& r : model.routing()) EXPECT_EQ(r.sp_value, 0.0);
}

}  // namespace
}  // namespace moe
