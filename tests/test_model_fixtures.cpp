// The whole model against the golden fixtures of the independent PyTorch reference
// (tools/reference/make_fixtures.py, tests/data/fixtures/{vanilla,deepseek}.*): logits, routing,
// every loss term and every parameter gradient after one forward/backward in f32, then the
// parameters after 3 AdamW steps (global-norm clipping, decoupled weight decay, and the balancing
// bias update when balance = bias) and the losses of every step.
//
// Tolerances are the fixture's own ("tolerances" in the JSON): 20x the largest difference the
// reference observed between a float32 run of its pipeline and the float64 truth.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/weights_io.h"
#include "support/paths.h"

namespace moe {
namespace {

using nlohmann::json;

struct Fixture {
  json meta;
  std::unique_ptr<SafeTensorsReader> tensors;
  ModelConfig model;
  LossConfig loss;
  Batch batch;
};

Fixture load_fixture(const std::string& name) {
  const std::string base = test::source_dir() + "/tests/data/fixtures/" + name;
  Fixture f;
  std::ifstream in(base + ".json");
  EXPECT_TRUE(in.good()) << "missing " << base << ".json";
  f.meta = json::parse(in);
  f.tensors = std::make_unique<SafeTensorsReader>(base + ".safetensors");
  const json& m = f.meta.at("config").at("model");
  ModelConfig& c = f.model;
  c.arch = m.at("arch").get<std::string>();
  c.vocab_size = m.at("vocab_size").get<int64_t>();
  c.d_model = m.at("d_model").get<int64_t>();
  c.n_layers = m.at("n_layers").get<int64_t>();
  c.n_heads = m.at("n_heads").get<int64_t>();
  c.n_kv_heads = m.at("n_kv_heads").get<int64_t>();
  c.head_dim = m.at("head_dim").get<int64_t>();
  c.ffn_dim = m.at("ffn_dim").get<int64_t>();
  c.n_experts = m.at("n_experts").get<int64_t>();
  c.top_k = m.at("top_k").get<int64_t>();
  c.expert_ffn_dim = m.at("expert_ffn_dim").get<int64_t>();
  c.n_shared_experts = m.at("n_shared_experts").get<int64_t>();
  c.shared_expert_ffn_dim = m.at("shared_expert_ffn_dim").get<int64_t>();
  c.dense_layers = m.at("dense_layers").get<int64_t>();
  c.norm_topk_prob = m.at("norm_topk_prob").get<bool>();
  c.tie_embeddings = m.at("tie_embeddings").get<bool>();
  c.rope_theta = m.at("rope_theta").get<double>();
  c.norm_eps = m.at("norm_eps").get<double>();
  c.max_seq_len = m.at("max_seq_len").get<int64_t>();
  c.init_std = m.at("init_std").get<double>();
  c.capacity_factor = m.at("capacity_factor").get<double>();
  const json& l = f.meta.at("config").at("loss");
  LossConfig& lc = f.loss;
  lc.losses = l.at("losses").get<std::vector<std::string>>();
  lc.lb_coef = l.at("lb_coef").get<double>();
  lc.z_coef = l.at("z_coef").get<double>();
  lc.sp_coef = l.at("sp_coef").get<double>();
  lc.cp_coef = l.at("cp_coef").get<double>();
  lc.balance = l.at("balance").get<std::string>();
  lc.bias_gamma = l.at("bias_gamma").get<double>();
  f.batch.batch = f.meta.at("batch").at("batch").get<int64_t>();
  f.batch.seq = f.meta.at("batch").at("seq").get<int64_t>();
  f.batch.inputs = f.tensors->to_i32("input_ids");
  f.batch.targets = f.tensors->to_i32("targets");
  return f;
}

std::vector<double> host_doubles(Backend& be, const Tensor& t) {
  if (t.dtype() == DType::kF64) return be.download_vec<double>(t);
  std::vector<float> v = be.download_vec<float>(t);
  return std::vector<double>(v.begin(), v.end());
}

// |got - want| <= atol + rtol_of_max * max|want| elementwise; reports the worst element.
void expect_close(const std::vector<double>& got, const std::vector<double>& want, double atol,
                  double rtol_of_max, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double want_max = 0;
  for (double w : want) want_max = std::max(want_max, std::fabs(w));
  const double tol = atol + rtol_of_max * want_max;
  double worst = -1;
  size_t worst_i = 0, bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(got[i] - want[i]);
    if (!(diff <= tol)) ++bad;
    if (!(diff <= worst) || std::isnan(diff)) {
      worst = diff;
      worst_i = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements off by more "
                     << "than " << tol << "; worst [" << worst_i << "] got " << got[worst_i]
                     << " want " << want[worst_i];
}

void expect_losses(const LossValues& got, const json& want, double rtol, const std::string& when) {
  const std::pair<const char*, double> terms[] = {{"lm", got.lm}, {"lb", got.lb}, {"z", got.z},
                                                  {"sp", got.sp}, {"cp", got.cp},
                                                  {"total", got.total}};
  for (const auto& t : terms) {
    const double w = want.at(t.first).get<double>();
    EXPECT_NEAR(t.second, w, rtol * std::fabs(w) + 1e-9) << when << ": loss " << t.first;
  }
}

// (fixture name, activation recomputation)
class ModelFixture : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(ModelFixture, ForwardBackwardAndThreeAdamWSteps) {
  Fixture f = load_fixture(std::get<0>(GetParam()));
  const bool recompute = std::get<1>(GetParam());
  const json& tol = f.meta.at("tolerances");
  auto be = make_backend("cpu");
  MoeModel model(f.model, f.loss, *be, f.batch.batch, f.batch.seq, DType::kF32, recompute);
  load_weights(model, *f.tensors, /*allow_unknown=*/true);

  // ---- step 0: forward, routing, losses, gradients ----
  model.forward(f.batch);
  {
    std::vector<float> logits = model.logits_host();
    expect_close(std::vector<double>(logits.begin(), logits.end()),
                 f.tensors->to_f64("expected.logits"), tol.at("logits_atol").get<double>(), 0,
                 "logits");
  }
  for (const LayerRouting& r : model.routing()) {
    const std::string l = std::to_string(r.layer);
    EXPECT_EQ(r.topk_idx, f.tensors->to_i32("expected.topk." + l)) << "top-k of layer " << l;
    expect_close(std::vector<double>(r.probs.begin(), r.probs.end()),
                 f.tensors->to_f64("expected.probs." + l), tol.at("logits_atol").get<double>(), 0,
                 "routing probabilities of layer " + l);
  }
  const double losses_rtol = tol.at("losses_rtol").get<double>();
  expect_losses(model.loss_values(), f.meta.at("losses_step0"), losses_rtol, "step 0");
  EXPECT_EQ(model.loss_values().n_tokens,
            static_cast<int64_t>(std::count_if(f.batch.targets.begin(), f.batch.targets.end(),
                                               [](int32_t t) { return t >= 0; })));

  model.zero_grad();
  model.backward(1.0f);
  int checked = 0;
  for (Param& p : model.params()) {
    if (!p.trainable) {
      EXPECT_FALSE(f.tensors->has("grad." + p.name)) << p.name;
      continue;
    }
    expect_close(host_doubles(*be, p.grad), f.tensors->to_f64("grad." + p.name),
                 tol.at("grad_atol").get<double>(),
                 tol.at("grad_rtol_of_tensor_max").get<double>(), "grad." + p.name);
    ++checked;
  }
  EXPECT_GT(checked, 10);

  // ---- 3 AdamW steps on the same batch ----
  const json& opt = f.meta.at("adamw");
  const int64_t steps = opt.at("steps").get<int64_t>();
  const double clip = opt.at("grad_clip").get<double>();
  std::vector<Tensor> m_state, v_state;
  for (Param& p : model.params()) {
    m_state.push_back(be->zeros(p.value.shape(), p.value.dtype()));
    v_state.push_back(be->zeros(p.value.shape(), p.value.dtype()));
  }
  Tensor norm_sq = be->zeros({1}, DType::kF32);
  for (int64_t step = 1; step <= steps; ++step) {
    if (step > 1) {
      model.forward(f.batch);
      expect_losses(model.loss_values(), f.meta.at("losses_per_step").at(step - 1), losses_rtol,
                    "step " + std::to_string(step - 1));
      model.zero_grad();
      model.backward(1.0f);
    }
    be->fill(norm_sq, 0.0);
    for (Param& p : model.params()) {
      if (p.trainable) be->global_norm_sq(norm_sq, p.grad);
    }
    const double norm = std::sqrt(static_cast<double>(be->download_vec<float>(norm_sq)[0]));
    const json& rec = f.meta.at("steps").at(step - 1);
    EXPECT_NEAR(norm, rec.at("grad_norm").get<double>(),
                1e-4 * rec.at("grad_norm").get<double>()) << "grad norm of step " << step;
    AdamWParams hp;
    hp.lr = opt.at("lr").get<float>();
    hp.beta1 = opt.at("beta1").get<float>();
    hp.beta2 = opt.at("beta2").get<float>();
    hp.eps = opt.at("eps").get<float>();
    hp.step = step;
    hp.grad_scale = (clip > 0 && norm > clip) ? static_cast<float>(clip / (norm + 1e-6)) : 1.0f;
    for (size_t i = 0; i < model.params().size(); ++i) {
      Param& p = model.params()[i];
      if (!p.trainable) continue;
      hp.weight_decay = p.decay ? opt.at("weight_decay").get<float>() : 0.0f;
      be->adamw_step(p.value, m_state[i], v_state[i], p.lowp, p.grad, hp);
    }
    if (f.loss.balance == "bias") model.update_balance_bias(static_cast<float>(f.loss.bias_gamma));
  }
  for (Param& p : model.params()) {
    expect_close(host_doubles(*be, p.value), f.tensors->to_f64("step3." + p.name),
                 tol.at("step3_atol").get<double>(), 0, "step3." + p.name);
  }
  model.forward(f.batch, /*need_grad=*/false);
  expect_losses(model.loss_values(), f.meta.at("losses_after_steps"), losses_rtol,
                "after the steps");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelFixture,
                         ::testing::Combine(::testing::Values("vanilla", "deepseek"),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<ModelFixture::ParamType>& info) {
                           return std::get<0>(info.param) +
                                  (std::get<1>(info.param) ? "_recompute" : "");
                         });

}  // namespace
}  // namespace moe
