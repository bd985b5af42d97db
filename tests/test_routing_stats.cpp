// Routing statistics (lib/routing/routing_stats) on a constructed two-layer routing whose every
// statistic was worked out by hand (the derivations are in the comments next to each expectation).
#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "routing/routing_stats.h"

namespace moe::routing {
namespace {

// Two MoE layers (transformer layers 1 and 3), E = 4, k = 2, 4 tokens.
LayerRouting layer_a() {
  LayerRouting r;
  r.layer = 1;
  r.n_tokens = 4;
  r.n_experts = 4;
  r.top_k = 2;
  r.probs = {0.5f, 0.3f, 0.1f, 0.1f,     // t0: selects {0,1}, top-1 = 0
             0.25f, 0.25f, 0.25f, 0.25f,  // t1: selects {2,3}, tie -> top-1 = 2 (lower index)
             0.1f, 0.6f, 0.2f, 0.1f,      // t2: selects {1,2}, top-1 = 1
             0.7f, 0.1f, 0.1f, 0.1f};     // t3: selects {0,1}, top-1 = 0
  r.topk_idx = {0, 1, 2, 3, 1, 2, 0, 1};
  r.sp_value = 0.5;  // mean over tokens of the sum over the 2 ordered pairs
  return r;
}

LayerRouting layer_b() {
  LayerRouting r;
  r.layer = 3;
  r.n_tokens = 4;
  r.n_experts = 4;
  r.top_k = 2;
  r.probs = {0.1f, 0.2f, 0.3f, 0.4f,   // t0: selects {3,2}, top-1 = 3
             0.4f, 0.3f, 0.2f, 0.1f,   // t1: selects {0,1}, top-1 = 0
             0.1f, 0.2f, 0.3f, 0.4f,   // t2: selects {2,3} (unsorted), top-1 = 3
             0.1f, 0.1f, 0.4f, 0.4f};  // t3: selects {3,2}, tie 0.4/0.4 -> top-1 = 2
  r.topk_idx = {3, 2, 0, 1, 2, 3, 3, 2};
  r.sp_value = 0.2;
  return r;
}

// A sub-batch of tokens [begin, end) of a layer.
LayerRouting slice(const LayerRouting& r, int64_t begin, int64_t end) {
  LayerRouting s = r;
  s.n_tokens = end - begin;
  s.probs.assign(r.probs.begin() + begin * r.n_experts, r.probs.begin() + end * r.n_experts);
  s.topk_idx.assign(r.topk_idx.begin() + begin * r.top_k, r.topk_idx.begin() + end * r.top_k);
  return s;
}

double plogp(double p) { return p > 0 ? p * std::log(p) : 0.0; }

void expect_hand_values(const RoutingSummary& s) {
  const double tol = 1e-6;  // probabilities are stored as float
  ASSERT_EQ(s.n_tokens, 4);
  ASSERT_EQ(s.layers.size(), 2u);
  ASSERT_EQ(s.pathways.size(), 1u);
  const LayerRoutingStats& a = s.layers[0];
  EXPECT_EQ(a.layer, 1);
  // H_a = -(1/4)[(.5,.3,.1,.1) + (4 x .25) + (.1,.6,.2,.1) + (.7,.1,.1,.1)]
  const double h_a = -(plogp(.5) + plogp(.3) + 2 * plogp(.1) + 4 * plogp(.25) + 2 * plogp(.1) +
                       plogp(.6) + plogp(.2) + plogp(.7) + 3 * plogp(.1)) / 4;
  EXPECT_NEAR(a.entropy, h_a, tol);
  EXPECT_NEAR(a.entropy_normalized, h_a / std::log(4.0), tol);
  EXPECT_NEAR(a.topk_mass, (0.8 + 0.5 + 0.8 + 0.8) / 4, tol);  // = 0.725
  EXPECT_NEAR(a.overlap, 0.5 / 2, 1e-12);                     // sp / (k(k-1))
  // loads: e0 {t0,t3}=2, e1 {t0,t2,t3}=3, e2 {t1,t2}=2, e3 {t1}=1 of k*T = 8 slots
  ASSERT_EQ(a.load_fraction.size(), 4u);
  EXPECT_DOUBLE_EQ(a.load_fraction[0], 0.25);
  EXPECT_DOUBLE_EQ(a.load_fraction[1], 0.375);
  EXPECT_DOUBLE_EQ(a.load_fraction[2], 0.25);
  EXPECT_DOUBLE_EQ(a.load_fraction[3], 0.125);
  EXPECT_NEAR(a.load_max_over_mean, 1.5, 1e-12);         // .375 / .25
  EXPECT_NEAR(a.load_cv, std::sqrt(2.0) / 4, 1e-12);     // std sqrt(2 * .125^2 / 4) / .25
  EXPECT_NEAR(a.mean_prob[0], (0.5 + 0.25 + 0.1 + 0.7) / 4, tol);
  const double lb_a = 4 * (0.25 * (0.5 + 0.25 + 0.1 + 0.7) / 4 + 0.375 * (0.3 + 0.25 + 0.6 + 0.1) / 4 +
                           0.25 * (0.1 + 0.25 + 0.2 + 0.1) / 4 + 0.125 * (0.1 + 0.25 + 0.1 + 0.1) / 4);
  EXPECT_NEAR(a.lb_value, lb_a, tol);
  const LayerRoutingStats& b = s.layers[1];
  EXPECT_NEAR(b.topk_mass, (0.7 + 0.7 + 0.7 + 0.8) / 4, tol);
  EXPECT_NEAR(b.overlap, 0.1, 1e-12);

  // Pathway C (rows = layer-1 expert, columns = layer-3 expert), from the 4 x 4 pairs per token:
  //   e0: [0,0,2,2]  e1: [0,0,3,3]  e2: [1,1,1,1]  e3: [1,1,0,0]
  const PathwayStats& p = s.pathways[0];
  EXPECT_EQ(p.layer_from, 1);
  EXPECT_EQ(p.layer_to, 3);
  const std::vector<int64_t> c = {0, 0, 2, 2, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0};
  EXPECT_EQ(p.counts, c);
  EXPECT_DOUBLE_EQ(p.conditional[1 * 4 + 2], 0.5);
  EXPECT_DOUBLE_EQ(p.conditional[2 * 4 + 0], 0.25);
  // Row entropies: log 2, log 2, log 4, log 2 -> mean 5/4 log 2; normalized 5/8.
  EXPECT_NEAR(p.row_entropy, 1.25 * std::log(2.0), 1e-12);
  EXPECT_NEAR(p.row_entropy_normalized, 0.625, 1e-12);
  // Row argmax (ties low): e0->2, e1->2, e2->0, e3->0. Tokens (top-1 a -> top-1 b):
  // t0 0->3 (pred 2, wrong), t1 2->0 (pred 0, right), t2 1->3 (pred 2, wrong), t3 0->2 (right).
  EXPECT_DOUBLE_EQ(p.top1_accuracy, 0.5);
  // Top-1 transitions: row 0 {2,3}, row 1 {3}, row 2 {0}: best in-sample 3 of 4.
  EXPECT_DOUBLE_EQ(p.top1_accuracy_best, 0.75);
  // Top-1 at layer 3: 3,0,3,2 -> most frequent 3, 2 of 4.
  EXPECT_DOUBLE_EQ(p.top1_accuracy_marginal, 0.5);
  EXPECT_DOUBLE_EQ(s.top1_accuracy, 0.5);
  EXPECT_NEAR(s.overlap, (0.25 + 0.1) / 2, 1e-12);
  EXPECT_NEAR(s.topk_mass, (a.topk_mass + b.topk_mass) / 2, 1e-12);
}

TEST(RoutingStats, HandComputedSingleBatch) {
  RoutingAccumulator acc;
  acc.add({layer_a(), layer_b()});
  expect_hand_values(acc.finish());
}

TEST(RoutingStats, AccumulatesOverBatches) {
  RoutingAccumulator acc;
  // Two batches of two tokens; each pass carries its own sp_value (here both halves equal).
  acc.add({slice(layer_a(), 0, 2), slice(layer_b(), 0, 2)});
  acc.add({slice(layer_a(), 2, 4), slice(layer_b(), 2, 4)});
  expect_hand_values(acc.finish());
}

TEST(RoutingStats, MaskExcludesPaddedTokens) {
  // Append a fifth token that selects experts nobody else uses; masked out it changes nothing.
  LayerRouting a = layer_a(), b = layer_b();
  for (LayerRouting* r : {&a, &b}) {
    r->n_tokens = 5;
    for (float x : {0.0f, 0.0f, 0.0f, 1.0f}) r->probs.push_back(x);
    r->topk_idx.push_back(3);
    r->topk_idx.push_back(2);
  }
  RoutingAccumulator acc;
  acc.add({a, b}, {1, 1, 1, 1, 0});
  expect_hand_values(acc.finish());
}

TEST(RoutingStats, OverlapUndefinedForTop1AndNullInJson) {
  LayerRouting r;
  r.layer = 0;
  r.n_tokens = 2;
  r.n_experts = 2;
  r.top_k = 1;
  r.probs = {1.0f, 0.0f, 0.0f, 1.0f};
  r.topk_idx = {0, 1};
  RoutingAccumulator acc;
  acc.add({r});
  RoutingSummary s = acc.finish();
  EXPECT_TRUE(std::isnan(s.layers[0].overlap));
  EXPECT_DOUBLE_EQ(s.layers[0].entropy, 0.0);  // one-hot rows
  EXPECT_DOUBLE_EQ(s.layers[0].load_cv, 0.0);  // perfectly balanced
  EXPECT_TRUE(s.pathways.empty());
  EXPECT_TRUE(std::isnan(s.top1_accuracy));  // no adjacent pair
  nlohmann::json j = routing_summary_to_json(s);
  EXPECT_TRUE(j["average"]["overlap"].is_null());
  EXPECT_TRUE(j["layers"][0]["overlap"].is_null());
  EXPECT_DOUBLE_EQ(j["layers"][0]["load_fraction"][1].get<double>(), 0.5);
}

TEST(RoutingStats, OverlapUnmeasuredIsNaN) {
  RoutingAccumulator acc(/*overlap_measured=*/false);
  acc.add({layer_a(), layer_b()});
  const RoutingSummary s = acc.finish();
  EXPECT_TRUE(std::isnan(s.overlap));
  EXPECT_TRUE(std::isnan(s.layers[0].overlap));
  EXPECT_NEAR(s.layers[0].topk_mass, 0.725, 1e-6);  // everything else unchanged
}

TEST(RoutingStats, JsonCarriesPathwayMatrices) {
  RoutingAccumulator acc;
  acc.add({layer_a(), layer_b()});
  nlohmann::json j = routing_summary_to_json(acc.finish());
  ASSERT_EQ(j["pathways"].size(), 1u);
  EXPECT_EQ(j["pathways"][0]["counts"][1][3].get<int64_t>(), 3);
  EXPECT_DOUBLE_EQ(j["pathways"][0]["conditional"][3][0].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["average"]["pathway_top1_accuracy"].get<double>(), 0.5);
  nlohmann::json small = routing_summary_to_json(acc.finish(), false);
  EXPECT_FALSE(small["pathways"][0].contains("counts"));
}

TEST(RoutingStats, RejectsInconsistentPasses) {
  RoutingAccumulator acc;
  acc.add({layer_a(), layer_b()});
  EXPECT_THROW(acc.add({layer_a()}), Error);  // layer count changed
  LayerRouting bad = layer_a();
  bad.topk_idx[0] = 7;  // expert out of range
  RoutingAccumulator fresh;
  EXPECT_THROW(fresh.add({bad, layer_b()}), Error);
  LayerRouting short_probs = layer_a();
  short_probs.probs.pop_back();
  EXPECT_THROW(fresh.add({short_probs, layer_b()}), Error);
}

}  // namespace
}  // namespace moe::routing
