// The flat parameter groups of MoeModel and the grouped AdamW over them: every trainable
// parameter is a view of exactly one group at its recorded offset, the groups are covered with no
// gap or overlap, decay follows the parameter (norm gains undecayed), and AdamW over the groups
// updates the parameters bitwise as AdamW one tensor at a time does (the update is elementwise;
// only the summation order of the gradient norm differs, checked to a relative 1e-6).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"
#include "support/tiny_models.h"
#include "train/optimizer.h"

namespace moe {
namespace {

bool is_norm_gain(const std::string& name) {
  return name.find("layernorm") != std::string::npos || name == "model.norm.weight";
}

TEST(ParamGroups, EveryTrainableParameterIsAViewOfOneGroup) {
  for (const char* balance : {"aux", "bias"}) {
    const ModelConfig cfg = test::tiny_deepseek_config();
    auto be = make_backend("cpu");
    MoeModel model(cfg, test::all_losses(balance), *be, 2, 8);
    const std::vector<ParamGroup>& groups = model.param_groups();
    ASSERT_EQ(groups.size(), 2u);
    EXPECT_TRUE(groups[0].decay);
    EXPECT_FALSE(groups[1].decay);
    std::vector<std::vector<int>> covered(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) {
      covered[g].assign(static_cast<size_t>(groups[g].value.numel()), 0);
    }
    int untrained = 0;
    for (const Param& p : model.params()) {
      if (!p.trainable) {
        EXPECT_EQ(p.group, -1) << p.name;
        ++untrained;
        continue;
      }
      ASSERT_GE(p.group, 0) << p.name;
      ASSERT_LT(p.group, 2) << p.name;
      const ParamGroup& g = groups[static_cast<size_t>(p.group)];
      EXPECT_EQ(p.decay, !is_norm_gain(p.name)) << p.name;
      EXPECT_EQ(p.decay, g.decay) << p.name;
      const float* base = static_cast<const float*>(g.value.data());
      EXPECT_EQ(static_cast<const float*>(p.value.data()), base + p.group_offset) << p.name;
      EXPECT_EQ(static_cast<const float*>(p.grad.data()),
                static_cast<const float*>(g.grad.data()) + p.group_offset)
          << p.name;
      for (int64_t i = 0; i < p.value.numel(); ++i) {
        ++covered[static_cast<size_t>(p.group)][static_cast<size_t>(p.group_offset + i)];
      }
    }
    EXPECT_EQ(untrained, std::string(balance) == "bias" ? cfg.n_layers - cfg.dense_layers : 0);
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t i = 0; i < covered[g].size(); ++i) {
        ASSERT_EQ(covered[g][i], 1) << "group " << g << " element " << i;
      }
    }
  }
}

TEST(ParamGroups, ZeroGradClearsEveryGradient) {
  const ModelConfig cfg = test::tiny_vanilla_config();
  auto be = make_backend("cpu");
  MoeModel model(cfg, test::all_losses(), *be, 2, 8);
  model.init_parameters(5);
  model.forward(test::random_batch(2, 8, cfg.vocab_size, 3));
  model.zero_grad();
  model.backward(1.0f);
  double total = 0;
  for (const Param& p : model.params()) {
    for (float x : be->download_vec<float>(p.grad)) total += std::abs(x);
  }
  ASSERT_GT(total, 0.0);
  model.zero_grad();
  for (const Param& p : model.params()) {
    for (float x : be->download_vec<float>(p.grad)) ASSERT_EQ(x, 0.0f) << p.name;
  }
}

TEST(GroupedAdamW, MatchesPerTensorAdamWBitwise) {
  const ModelConfig cfg = test::tiny_deepseek_config();
  const LossConfig loss = test::all_losses();
  auto be = make_backend("cpu", 2);
  MoeModel grouped(cfg, loss, *be, 2, 8), single(cfg, loss, *be, 2, 8);
  grouped.init_parameters(11);
  single.init_parameters(11);
  TrainConfig train;
  train.weight_decay = 0.1;
  train.grad_clip = 0.05;  // small, so clipping is active and the norm matters
  AdamW opt_grouped(*be, grouped.params(), train, grouped.param_groups());
  AdamW opt_single(*be, single.params(), train);
  for (int64_t step = 1; step <= 3; ++step) {
    const Batch batch = test::random_batch(2, 8, cfg.vocab_size, 40 + step);
    for (MoeModel* m : {&grouped, &single}) {
      m->forward(batch);
      m->zero_grad();
      m->backward(1.0f);
    }
    const double norm_g = opt_grouped.grad_norm(), norm_s = opt_single.grad_norm();
    ASSERT_GT(norm_s, 0.0);
    EXPECT_NEAR(norm_g, norm_s, 1e-6 * norm_s) << "step " << step;
    // The same clip factor for both, so the updates can be compared bitwise.
    const float scale = AdamW::clip_scale(norm_s, train.grad_clip);
    ASSERT_LT(scale, 1.0f);
    opt_grouped.step(step, 1e-2, scale);
    opt_single.step(step, 1e-2, scale);
    for (size_t i = 0; i < grouped.params().size(); ++i) {
      const std::vector<float> a = be->download_vec<float>(grouped.params()[i].value);
      const std::vector<float> b = be->download_vec<float>(single.params()[i].value);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
          << grouped.params()[i].name << " after step " << step;
    }
  }
}

}  // namespace
}  // namespace moe
