// moeeval's scoring with the real model: per-request log-likelihoods of MoeModel on the vanilla
// fixture weights, batched (several requests per pass, right padding, prefix sharing), against
// the PyTorch reference scoring each request alone (tests/data/fixtures/eval_vanilla.json from
// tools/reference/make_eval_fixture.py). Also: loading a checkpoint for evaluation, and the
// clear errors for a checkpoint without tokenizer or weights.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/error.h"
#include "checkpoint/model_checkpoint.h"
#include "eval/loglik_scorer.h"
#include "eval/moe_scoring.h"
#include "io/safetensors.h"
#include "model/weights_io.h"
#include "support/paths.h"

namespace fs = std::filesystem;

namespace moe::eval {
namespace {

using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path << " missing";
  return json::parse(in);
}

std::string fixture(const std::string& name) {
  return test::source_dir() + "/tests/data/fixtures/" + name;
}

Config fixture_config() {
  const json m = read_json(fixture("vanilla.json"))["config"]["model"];
  Config c;
  c.model.arch = m["arch"];
  c.model.vocab_size = m["vocab_size"];
  c.model.d_model = m["d_model"];
  c.model.n_layers = m["n_layers"];
  c.model.n_heads = m["n_heads"];
  c.model.n_kv_heads = m["n_kv_heads"];
  c.model.head_dim = m["head_dim"];
  c.model.ffn_dim = m["ffn_dim"];
  c.model.n_experts = m["n_experts"];
  c.model.top_k = m["top_k"];
  c.model.expert_ffn_dim = m["expert_ffn_dim"];
  c.model.n_shared_experts = m["n_shared_experts"];
  c.model.dense_layers = m["dense_layers"];
  c.model.norm_topk_prob = m["norm_topk_prob"];
  c.model.tie_embeddings = m["tie_embeddings"];
  c.model.rope_theta = m["rope_theta"];
  c.model.norm_eps = m["norm_eps"];
  c.model.max_seq_len = m["max_seq_len"];
  c.model.init_std = m["init_std"];
  c.loss.losses = {"lb"};
  c.train.seq_len = c.model.max_seq_len;
  return c;
}

TEST(EvalModelScores, MatchPyTorchReferencePerRequest) {
  const json fx = read_json(fixture("eval_vanilla.json"));
  std::vector<TokenRequest> reqs;
  for (const auto& r : fx["requests"]) {
    reqs.push_back({r["tokens"].get<std::vector<int32_t>>(), r["n_targets"].get<int64_t>()});
  }
  const double tol = fx["tolerance_ll"];
  const Config cfg = fixture_config();
  auto backend = make_backend("cpu", 2);
  for (int64_t rows : {1, 3, 8}) {
    SCOPED_TRACE("rows per pass " + std::to_string(rows));
    MoeModel model(cfg.model, cfg.loss, *backend, rows, cfg.model.max_seq_len);
    SafeTensorsReader weights(fixture("vanilla.safetensors"));
    load_weights(model, weights, /*allow_unknown=*/true);
    MoeScoring scoring(model, rows);
    LoglikScorer scorer(scoring);
    const std::vector<ScoredRequest> got = scorer.score(reqs, 2);
    ASSERT_EQ(got.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      const json& want = fx["requests"][i];
      EXPECT_NEAR(got[i].ll, want["ll"].get<double>(), tol) << "request " << i;
      EXPECT_EQ(got[i].greedy, want["greedy"].get<bool>()) << "request " << i;
    }
    // Rows: request 2, requests 3+4 (same input), 5, and 7, whose input [2,5,9,13,7,60,61] is
    // extended by no other and prefixed by the inputs of requests 0, 1 and 6 ([2]). The row of
    // requests 3+4 scores only its last input position after a 4-token context (4x its scored
    // positions), so it runs as a context row into the KV cache and a continuation row: 5 rows
    // through the model.
    EXPECT_EQ(scorer.stats().rows, 5);
    EXPECT_EQ(scorer.stats().cached_contexts, 1);
  }
}

// A checkpoint directory as moetrain writes it, minus the files a test removes.
std::string write_checkpoint(const std::string& name, bool with_tokenizer) {
  const std::string dir = test::make_temp_dir(name) + "/checkpoints/step_00000007";
  fs::create_directories(dir);
  Config cfg = fixture_config();
  std::ofstream(fs::path(dir) / "config.yaml") << config_to_yaml(cfg);
  auto backend = make_backend("cpu", 1);
  MoeModel model(cfg.model, cfg.loss, *backend, 1, cfg.model.max_seq_len);
  model.init_parameters(3);
  save_weights(model, (fs::path(dir) / "model.safetensors").string());
  if (with_tokenizer) std::ofstream(fs::path(dir) / "tokenizer.model") << "not a model";
  return dir;
}

template <typename Fn>
void expect_usage_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a usage error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    for (const auto& p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
    }
  }
}

TEST(EvalModelScores, CheckpointWithoutTokenizerIsAClearError) {
  auto backend = make_backend("cpu", 1);
  const std::string dir = write_checkpoint("ck-notok", false);
  expect_usage_error([&] { load_model_checkpoint(dir, *backend, 2); }, {dir, "tokenizer.model"});
  // A run directory resolves to its newest checkpoint, with the same error.
  const std::string run = fs::path(dir).parent_path().parent_path().string();
  expect_usage_error([&] { load_model_checkpoint(run, *backend, 2); }, {"tokenizer.model"});
  fs::remove(fs::path(dir) / "model.safetensors");
  expect_usage_error([&] { load_model_checkpoint(dir, *backend, 2); }, {"model.safetensors"});
  expect_usage_error([&] { load_model_checkpoint(dir + "/nope", *backend, 2); },
                     {"no such directory"});
}

TEST(EvalModelScores, CheckpointWithCorruptTokenizerIsAClearError) {
  auto backend = make_backend("cpu", 1);
  const std::string dir = write_checkpoint("ck-badtok", true);
  expect_usage_error([&] { load_model_checkpoint(dir, *backend, 2); }, {"tokenizer.model"});
}

}  // namespace
}  // namespace moe::eval
