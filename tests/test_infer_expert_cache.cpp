// Expert offload (infer/expert_cache.h) on a tiny model saved to a safetensors file:
// - C = all experts: every access hits and the logits equal the resident model's bitwise;
// - C < E with LRU only and with pathway prefetch: misses are read from the file, and the
//   logits still equal the resident model's bitwise (non-resident experts are NaN-poisoned, so
//   any use of one would show); prefetch reads ahead and some of it is used;
// - C < top_k, C > E, and a prefetch mode without calibration are usage errors.
#include <cmath>
#include <functional>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/error.h"
#include "infer/decode_session.h"
#include "infer/expert_cache.h"
#include "model/model.h"
#include "model/weights_io.h"
#include "routing/placement.h"
#include "routing/trace.h"
#include "support/paths.h"
#include "support/tiny_models.h"

namespace moe::infer {
namespace {

ModelConfig offload_config() {
  ModelConfig c = test::tiny_vanilla_config();
  c.n_experts = 8;
  c.top_k = 2;
  c.max_seq_len = 24;
  return c;
}

// Greedy decoding of one prompt with stepwise prompts (as offload runs them); all logits.
std::vector<float> decode_logits(MoeModel& model, int64_t steps) {
  DecodeSession s(model, 1);
  s.set_stepwise_prompts(true);
  s.start({{1, 5, 9, 2, 7}});
  std::vector<float> all;
  const int64_t V = model.config().vocab_size;
  for (int64_t i = 0; i < steps; ++i) {
    all.insert(all.end(), s.logits(0), s.logits(0) + V);
    int32_t best = 0;
    for (int32_t v = 1; v < V; ++v) best = s.logits(0)[v] > s.logits(0)[best] ? v : best;
    s.step({best});
  }
  return all;
}

struct Fixture {
  ModelConfig cfg = offload_config();
  std::unique_ptr<Backend> be = make_backend("cpu", 2);
  std::string path;
  std::vector<float> reference;
  routing::TransitionGraph graph;

  Fixture() {
    MoeModel model(cfg, test::all_losses(), *be, 4, cfg.max_seq_len);
    model.init_parameters(21);
    path = test::make_temp_dir("expert_cache") + "/model.safetensors";
    save_weights(model, path);
    reference = decode_logits(model, 12);
    // Calibration trace: random text through the same model.
    model.forward(test::random_batch(4, 24, cfg.vocab_size, 5), false);
    routing::RoutingTrace t;
    const auto r = model.routing();
    for (int64_t row = 0; row < 4; ++row) t.append_sequence(r, row * 24, 24);
    graph = routing::transition_graph(t);
  }
  std::unique_ptr<MoeModel> fresh() {
    auto m = std::make_unique<MoeModel>(cfg, test::all_losses(), *be, 4, cfg.max_seq_len);
    load_weights(*m, path);
    return m;
  }
};

TEST(ExpertCache, AllExpertsResidentHitsEverythingBitwise) {
  Fixture f;
  auto model = f.fresh();
  ExpertCache cache(*model, f.path, f.cfg.n_experts, "none");
  EXPECT_EQ(decode_logits(*model, 12), f.reference);
  EXPECT_GT(cache.stats().accesses, 0);
  EXPECT_EQ(cache.stats().hits, cache.stats().accesses);
  EXPECT_EQ(cache.stats().bytes_read, 0);
}

TEST(ExpertCache, OffloadAndPrefetchLeaveOutputsBitwiseEqual) {
  Fixture f;
  for (const char* prefetch : {"none", "pathway"}) {
    for (int64_t C : {2, 3, 5}) {
      auto model = f.fresh();
      ExpertCache cache(*model, f.path, C, prefetch, &f.graph);
      EXPECT_EQ(decode_logits(*model, 12), f.reference) << prefetch << " C=" << C;
      const ExpertCacheStats& s = cache.stats();
      EXPECT_GT(s.misses, 0) << prefetch << " C=" << C;
      EXPECT_EQ(s.hits + s.misses, s.accesses);
      EXPECT_EQ(s.bytes_read, (s.misses + s.prefetched) * cache.expert_bytes());
      for (int64_t m = 0; m < 3; ++m) EXPECT_LE(cache.resident(m), C);
      if (std::string(prefetch) == "pathway") {
        EXPECT_GT(s.prefetched, 0);
      }
    }
  }
}

int exit_code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.exit_code();
  }
  return 0;
}

TEST(ExpertCache, BadCapacitiesAreUsageErrors) {
  Fixture f;
  auto model = f.fresh();
  EXPECT_EQ(exit_code_of([&] { ExpertCache c(*model, f.path, 1, "none"); }), 2);
  EXPECT_EQ(exit_code_of([&] { ExpertCache c(*model, f.path, 9, "none"); }), 2);
  EXPECT_EQ(exit_code_of([&] { ExpertCache c(*model, f.path, 4, "pathway"); }), 2);
  EXPECT_EQ(exit_code_of([&] { ExpertCache c(*model, f.path, 4, "always"); }), 2);
}

}  // namespace
}  // namespace moe::infer
