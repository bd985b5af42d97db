// Checks the golden fixtures tests/data/fixtures/{vanilla,deepseek} (written by
// tools/reference/make_fixtures.py) as files: the project's safetensors reader accepts them, every
// parameter of docs/model.md §5.3's table is present with its shape for the config in the JSON, each trainable
// parameter has its grad.* and every parameter its step3.*, the targets are the next tokens, the
// stored logits reproduce the stored lm loss, and the JSON's total is the weighted sum of its terms.
// The model's agreement with the fixtures is tested by the model's own tests; this one makes sure
// a broken or stale fixture fails loudly instead of making those tests meaningless.
#include <cmath>
#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "support/paths.h"

namespace moe {
namespace {

using nlohmann::json;

struct Fixture {
  json meta;
  std::unique_ptr<SafeTensorsReader> tensors;
};

Fixture load_fixture(const std::string& name) {
  const std::string base = test::source_dir() + "/tests/data/fixtures/" + name;
  Fixture f;
  std::ifstream src(base + ".json");
  EXPECT_TRUE(src.good()) << base << ".json missing";
  f.meta = json::parse(src);
  f.tensors = std::make_unique<SafeTensorsReader>(base + ".safetensors");
  return f;
}

// The parameter names and shapes of docs/model.md §5 for a model config from the fixture JSON.
std::map<std::string, Shape> expected_parameters(const json& model, bool with_bias) {
  const int64_t d = model["d_model"], V = model["vocab_size"], H = model["n_heads"];
  const int64_t KV = model["n_kv_heads"], E = model["n_experts"], f = model["expert_ffn_dim"];
  const int64_t hd = model["head_dim"].get<int64_t>() > 0 ? model["head_dim"].get<int64_t>() : d / H;
  const int64_t fs = model["shared_expert_ffn_dim"].get<int64_t>() > 0
                         ? model["shared_expert_ffn_dim"].get<int64_t>() : f;
  const int64_t S = model["n_shared_experts"], F = model["ffn_dim"];
  std::map<std::string, Shape> out{{"model.embed_tokens.weight", {V, d}}, {"model.norm.weight", {d}}};
  if (!model["tie_embeddings"].get<bool>()) out["lm_head.weight"] = {V, d};
  for (int64_t i = 0; i < model["n_layers"].get<int64_t>(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out[p + "input_layernorm.weight"] = {d};
    out[p + "post_attention_layernorm.weight"] = {d};
    out[p + "self_attn.q_proj.weight"] = {H * hd, d};
    out[p + "self_attn.k_proj.weight"] = {KV * hd, d};
    out[p + "self_attn.v_proj.weight"] = {KV * hd, d};
    out[p + "self_attn.o_proj.weight"] = {d, H * hd};
    if (i < model["dense_layers"].get<int64_t>()) {
      out[p + "mlp.gate_proj.weight"] = {F, d};
      out[p + "mlp.up_proj.weight"] = {F, d};
      out[p + "mlp.down_proj.weight"] = {d, F};
      continue;
    }
    out[p + "mlp.gate.weight"] = {E, d};
    if (with_bias) out[p + "mlp.gate.e_score_correction_bias"] = {E};
    for (int64_t e = 0; e < E; ++e) {
      const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
      out[q + "gate_proj.weight"] = {f, d};
      out[q + "up_proj.weight"] = {f, d};
      out[q + "down_proj.weight"] = {d, f};
    }
    if (S > 0) {
      out[p + "mlp.shared_experts.gate_proj.weight"] = {S * fs, d};
      out[p + "mlp.shared_experts.up_proj.weight"] = {S * fs, d};
      out[p + "mlp.shared_experts.down_proj.weight"] = {d, S * fs};
    }
  }
  return out;
}

bool has_prefix(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

class ReferenceFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceFixture, HoldsEveryParameterWithItsGradientAndStep3Value) {
  Fixture f = load_fixture(GetParam());
  const json& model = f.meta["config"]["model"];
  const bool with_bias = f.meta["config"]["loss"]["balance"] == "bias";
  const auto want = expected_parameters(model, with_bias);
  std::set<std::string> params;
  for (const auto& name : f.tensors->names()) {
    if (has_prefix(name, "grad.") || has_prefix(name, "step3.") || has_prefix(name, "expected.") ||
        name == "input_ids" || name == "targets") {
      continue;
    }
    params.insert(name);
  }
  EXPECT_EQ(params.size(), want.size());
  for (const auto& [name, shape] : want) {
    ASSERT_TRUE(f.tensors->has(name)) << name;
    EXPECT_EQ(f.tensors->shape(name), shape) << name;
    EXPECT_EQ(f.tensors->shape("step3." + name), shape) << name;
    const bool trainable = name.find("e_score_correction_bias") == std::string::npos;
    EXPECT_EQ(f.tensors->has("grad." + name), trainable) << name;
    if (!trainable) continue;
    EXPECT_EQ(f.tensors->shape("grad." + name), shape) << name;
    // The optimizer moved every trainable tensor (weight decay or a gradient reaches each).
    EXPECT_NE(f.tensors->to_f32(name), f.tensors->to_f32("step3." + name)) << name;
    for (float g : f.tensors->to_f32("grad." + name)) ASSERT_TRUE(std::isfinite(g)) << name;
  }
}

TEST_P(ReferenceFixture, TargetsAreNextTokensAndLogitsGiveTheLmLoss) {
  Fixture f = load_fixture(GetParam());
  const int64_t B = f.meta["batch"]["batch"], T = f.meta["batch"]["seq"];
  const int64_t V = f.meta["config"]["model"]["vocab_size"];
  ASSERT_EQ(f.tensors->shape("input_ids"), (Shape{B, T}));
  ASSERT_EQ(f.tensors->shape("targets"), (Shape{B, T}));
  ASSERT_EQ(f.tensors->shape("expected.logits"), (Shape{B * T, V}));
  const auto ids = f.tensors->to_i32("input_ids");
  const auto targets = f.tensors->to_i32("targets");
  const auto logits = f.tensors->to_f64("expected.logits");
  double nll = 0;
  int64_t counted = 0, ignored = 0;
  for (int64_t p = 0; p < B * T; ++p) {
    ASSERT_GE(ids[p], 0);
    ASSERT_LT(ids[p], V);
    if (targets[p] < 0) {
      ++ignored;
      continue;
    }
    ASSERT_LT(targets[p], V);
    if (p % T + 1 < T) {
      EXPECT_EQ(targets[p], ids[p + 1]) << "position " << p;
    }
    double mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, logits[p * V + v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[p * V + v] - mx);
    nll += std::log(sum) + mx - logits[p * V + targets[p]];
    ++counted;
  }
  EXPECT_GT(ignored, 0);
  const double lm = f.meta["losses_step0"]["lm"];
  EXPECT_NEAR(nll / static_cast<double>(counted), lm, 1e-5 * lm);
}

TEST_P(ReferenceFixture, TotalIsTheWeightedSumOfTheEnabledTerms) {
  Fixture f = load_fixture(GetParam());
  const json& loss = f.meta["config"]["loss"];
  const json& steps = f.meta["losses_per_step"];
  ASSERT_EQ(steps.size(), f.meta["adamw"]["steps"].get<size_t>());
  EXPECT_EQ(steps[0], f.meta["losses_step0"]);
  for (const json& l : steps) {
    double total = l["lm"];
    for (const auto& name : loss["losses"]) {
      const std::string n = name.get<std::string>();
      total += loss[n + "_coef"].get<double>() * l[n].get<double>();
    }
    EXPECT_NEAR(total, l["total"].get<double>(), 1e-12 * std::fabs(total));
  }
  const json& tol = f.meta["tolerances"];
  for (const char* key : {"logits_atol", "losses_rtol", "grad_atol", "step3_atol"}) {
    EXPECT_GT(tol[key].get<double>(), 0) << key;
  }
}

TEST_P(ReferenceFixture, RoutingRecordsAreProbabilitiesAndDistinctExperts) {
  Fixture f = load_fixture(GetParam());
  const json& model = f.meta["config"]["model"];
  const int64_t E = model["n_experts"], k = model["top_k"];
  const int64_t N = f.meta["batch"]["batch"].get<int64_t>() * f.meta["batch"]["seq"].get<int64_t>();
  int64_t layers = 0;
  for (int64_t i = model["dense_layers"]; i < model["n_layers"].get<int64_t>(); ++i, ++layers) {
    const auto probs = f.tensors->to_f64("expected.probs." + std::to_string(i));
    const auto topk = f.tensors->to_i32("expected.topk." + std::to_string(i));
    ASSERT_EQ(probs.size(), static_cast<size_t>(N * E));
    ASSERT_EQ(topk.size(), static_cast<size_t>(N * k));
    for (int64_t t = 0; t < N; ++t) {
      double sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += probs[t * E + e];
      EXPECT_NEAR(sum, 1.0, 1e-5);
      std::set<int32_t> chosen(topk.begin() + t * k, topk.begin() + (t + 1) * k);
      EXPECT_EQ(chosen.size(), static_cast<size_t>(k));
      EXPECT_GE(*chosen.begin(), 0);
      EXPECT_LT(*chosen.rbegin(), E);
    }
  }
  EXPECT_GE(layers, 1);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceFixture, ::testing::Values("vanilla", "deepseek"));

}  // namespace
}  // namespace moe
