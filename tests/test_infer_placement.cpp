// Routing traces (routing/trace.h) and expert placement (routing/placement.h):
// - a trace survives write + read; a file that is not a trace, a truncated one, and a trace from
//   another model (fingerprint) are usage errors;
// - a trace feeds RoutingAccumulator as selection-only passes: pathway counts as from the model,
//   probability statistics NaN;
// - on a synthetic trace whose tokens stay within hidden expert groups (a placement with zero
//   cross-device hops exists), path-aware finds a zero-crossing placement, round-robin does not;
// - on structured random traces path-aware is never worse than round-robin or contiguous on the
//   calibration trace, every placement is balanced, and path-aware is deterministic;
// - P that does not divide E (or exceeds it) is a usage error; hop counting on a hand example.
#include <cmath>
#include <functional>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/error.h"
#include "model/model.h"
#include "routing/placement.h"
#include "routing/routing_stats.h"
#include "routing/trace.h"
#include "support/paths.h"
#include "support/tiny_models.h"

namespace moe::routing {
namespace {

int exit_code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.exit_code();
  }
  return 0;
}

// Tokens routed within G hidden groups: group g at layer m is {perm_m[g * per + i]}; each token
// picks a group, then its k experts in it (top-1 first). With noise > 0 some tokens pick
// uniformly random experts instead.
RoutingTrace grouped_trace(int64_t M, int64_t E, int64_t k, int64_t groups, int64_t tokens,
                           double noise, uint64_t seed) {
  std::mt19937_64 rng(seed);
  RoutingTrace t;
  t.n_experts = E;
  t.top_k = k;
  for (int64_t m = 0; m < M; ++m) t.layers.push_back(static_cast<int32_t>(m + 1));
  std::vector<std::vector<int64_t>> perm(static_cast<size_t>(M));
  for (auto& p : perm) {
    for (int64_t e = 0; e < E; ++e) p.push_back(e);
    std::shuffle(p.begin(), p.end(), rng);
  }
  const int64_t per = E / groups;
  for (int64_t i = 0; i < tokens; ++i) {
    const int64_t g = static_cast<int64_t>(rng() % groups);
    for (int64_t m = 0; m < M; ++m) {
      std::vector<int64_t> pool;
      const bool random = std::uniform_real_distribution<double>(0, 1)(rng) < noise;
      for (int64_t j = 0; j < (random ? E : per); ++j) {
        pool.push_back(random ? j : perm[m][g * per + j]);
      }
      std::shuffle(pool.begin(), pool.end(), rng);
      for (int64_t j = 0; j < k; ++j) t.experts.push_back(static_cast<uint16_t>(pool[j]));
    }
  }
  t.seq_lens = {tokens};
  return t;
}

TEST(RoutingTrace, RoundTripAndBadFiles) {
  RoutingTrace t = grouped_trace(3, 8, 2, 2, 50, 0.2, 1);
  t.seq_lens = {20, 30};
  t.fingerprint = 0x1234;
  const std::string dir = test::make_temp_dir("trace");
  write_trace(dir + "/a.moetrace", t);
  const RoutingTrace r = read_trace(dir + "/a.moetrace");
  EXPECT_EQ(r.fingerprint, t.fingerprint);
  EXPECT_EQ(r.layers, t.layers);
  EXPECT_EQ(r.seq_lens, t.seq_lens);
  EXPECT_EQ(r.experts, t.experts);
  EXPECT_EQ(exit_code_of([&] { check_trace_model(r, 0x1235, "a"); }), 2);
  EXPECT_EQ(exit_code_of([&] { check_trace_model(r, 0x1234, "a"); }), 0);
  std::ofstream(dir + "/bad") << "not a trace";
  EXPECT_EQ(exit_code_of([&] { read_trace(dir + "/bad"); }), 2);
  std::ifstream in(dir + "/a.moetrace", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir + "/cut", std::ios::binary) << bytes.substr(0, bytes.size() - 3);
  EXPECT_EQ(exit_code_of([&] { read_trace(dir + "/cut"); }), 2);
  EXPECT_EQ(exit_code_of([&] { read_trace(dir + "/missing"); }), 2);
}

TEST(RoutingTrace, FeedsThePathwayStatistics) {
  const ModelConfig cfg = test::tiny_vanilla_config();
  auto be = make_backend("cpu", 1);
  MoeModel model(cfg, test::all_losses(), *be, 2, cfg.max_seq_len);
  model.init_parameters(3);
  const Batch b = test::random_batch(2, 16, cfg.vocab_size, 9);
  model.forward(b, false);
  const auto routing = model.routing();
  RoutingTrace t;
  t.fingerprint = model_fingerprint(model);
  t.append_sequence(routing, 0, 16);
  t.append_sequence(routing, 16, 16);
  RoutingAccumulator from_model, from_trace;
  from_model.add(routing);
  from_trace.add(trace_as_routing(t));
  const RoutingSummary a = from_model.finish(), s = from_trace.finish();
  ASSERT_EQ(a.pathways.size(), s.pathways.size());
  for (size_t p = 0; p < a.pathways.size(); ++p) {
    EXPECT_EQ(a.pathways[p].counts, s.pathways[p].counts);
    EXPECT_DOUBLE_EQ(a.pathways[p].top1_accuracy, s.pathways[p].top1_accuracy);
  }
  EXPECT_EQ(a.layers[0].load_fraction, s.layers[0].load_fraction);
  EXPECT_TRUE(std::isnan(s.entropy));
  // Another model's weights give another fingerprint.
  MoeModel other(cfg, test::all_losses(), *be, 2, cfg.max_seq_len);
  other.init_parameters(4);
  EXPECT_NE(model_fingerprint(other), t.fingerprint);
}

TEST(Placement, PathAwareFindsTheKnownBestPlacement) {
  for (int64_t P : {2, 4}) {
    const RoutingTrace t = grouped_trace(4, 8, 2, P, 2000, 0.0, 7 + P);
    const TransitionGraph g = transition_graph(t);
    const Placement best = path_aware_placement(g, P);
    check_balanced(best);
    EXPECT_EQ(cut_weight(g, best), 0) << "P=" << P;
    EXPECT_EQ(count_hops(t, best, 16, 2).crossing, 0);
    EXPECT_GT(cut_weight(g, round_robin_placement(4, 8, P)), 0);
  }
}

TEST(Placement, NeverWorseThanFixedPlacementsAndBalanced) {
  for (uint64_t seed = 0; seed < 6; ++seed) {
    for (int64_t P : {2, 4, 8}) {
      const RoutingTrace t = grouped_trace(3, 16, 2, 4, 800, 0.5, seed);
      const TransitionGraph g = transition_graph(t);
      const Placement pa = path_aware_placement(g, P, 1);
      for (const Placement& p : {pa, round_robin_placement(3, 16, P),
                                 contiguous_placement(3, 16, P)}) {
        check_balanced(p);
        EXPECT_LE(cut_weight(g, pa), cut_weight(g, p)) << "seed " << seed << " P " << P;
      }
      EXPECT_EQ(path_aware_placement(g, P, 1).device, pa.device) << "not deterministic";
      // The cut is the crossing hop count.
      EXPECT_EQ(count_hops(t, pa, 16, 2).crossing, cut_weight(g, pa));
    }
  }
}

TEST(Placement, DevicesMustDivideTheExperts) {
  EXPECT_EQ(exit_code_of([] { round_robin_placement(2, 8, 3); }), 2);
  EXPECT_EQ(exit_code_of([] { check_devices(8, 16); }), 2);
  EXPECT_EQ(exit_code_of([] { check_devices(8, 0); }), 2);
  const RoutingTrace t = grouped_trace(2, 6, 2, 2, 10, 0, 1);
  EXPECT_EQ(exit_code_of([&] { path_aware_placement(transition_graph(t), 4); }), 2);
  EXPECT_EQ(exit_code_of([&] { make_placement("nearest", transition_graph(t), 2); }), 2);
}

TEST(Placement, CountsHopsAndBytesOnAHandExample) {
  // 2 layers, E = 4, k = 2, P = 2 round-robin (device = e % 2). Token 0: layer 0 top-1 = 1
  // (device 1), layer 1 selects {3, 2} -> devices {1, 0}: 2 hops, 1 crossing, 1 remote device.
  // Token 1: top-1 = 0 (device 0), layer 1 {0, 2}: 2 hops on device 0, none crossing.
  RoutingTrace t;
  t.n_experts = 4;
  t.top_k = 2;
  t.layers = {0, 1};
  t.seq_lens = {2};
  t.experts = {1, 0, 3, 2, /*token 1*/ 0, 3, 0, 2};
  const HopStats s = count_hops(t, round_robin_placement(2, 4, 2), 10, 2);
  EXPECT_EQ(s.hops, 4);
  EXPECT_EQ(s.crossing, 1);
  EXPECT_DOUBLE_EQ(s.cross_fraction, 0.25);
  EXPECT_DOUBLE_EQ(s.a2a_bytes_per_token, 2.0 * 10 * 2 * 1 / 2);
}

}  // namespace
}  // namespace moe::routing
