// Generation over the KV cache (infer/decode_session.h, infer/generate.h, infer/sampler.h):
// - cached incremental decoding equals recomputing the whole sequence with forward() at every
//   step, token for token (greedy) with logits within 1e-5, for the vanilla and the DeepSeekMoE
//   tiny models, at batch 1 and 3 with prompts of different lengths (one grows to max_seq_len);
// - sampling is reproducible in the seed and changes with it;
// - on a model whose logits are known exactly (every block's output projection zero, so every
//   position sees the same logits), the sampled tokens follow softmax(logits / T) restricted by
//   top-k / top-p: a chi-square goodness-of-fit bound, and no token outside the kept set;
// - bad input (no prompt, an empty prompt, a prompt longer than max_seq_len) is a usage error.
#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/error.h"
#include "infer/decode_session.h"
#include "infer/generate.h"
#include "infer/sampler.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace moe {
namespace {

std::vector<double> last_logits_full(MoeModel& model, const std::vector<int32_t>& seq) {
  Batch b;
  b.batch = 1;
  b.seq = static_cast<int64_t>(seq.size());
  b.inputs = seq;
  b.targets.assign(seq.size(), -1);
  model.forward(b, /*need_grad=*/false);
  const std::vector<float> all = model.logits_host();
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  return std::vector<double>(all.end() - static_cast<int64_t>(V), all.end());
}

int32_t argmax(const std::vector<double>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

void check_cached_decoding(const ModelConfig& cfg, const std::vector<std::vector<int32_t>>& prompts,
                           int64_t steps) {
  auto be = make_backend("cpu", 2);
  const int64_t B = static_cast<int64_t>(prompts.size());
  MoeModel model(cfg, test::all_losses(), *be, B, cfg.max_seq_len);
  model.init_parameters(11);
  infer::DecodeSession session(model, B);
  session.start(prompts);
  std::vector<std::vector<int32_t>> seqs = prompts;
  const size_t V = static_cast<size_t>(cfg.vocab_size);
  for (int64_t s = 0; s <= steps; ++s) {
    std::vector<int32_t> next(static_cast<size_t>(B), 0);
    for (int64_t b = 0; b < B; ++b) {
      if (session.done(b)) continue;
      ASSERT_EQ(session.length(b), static_cast<int64_t>(seqs[b].size()));
      const std::vector<double> got(session.logits(b), session.logits(b) + V);
      const std::vector<double> want = last_logits_full(model, seqs[b]);
      EXPECT_TRUE(test::all_close(got, want, 1e-5, 1e-5))
          << cfg.arch << " row " << b << " at length " << seqs[b].size();
      next[b] = argmax(got);
      EXPECT_EQ(next[b], argmax(want)) << cfg.arch << " row " << b << " step " << s;
      if (session.room(b) == 0) {
        session.set_done(b);
      } else {
        seqs[b].push_back(next[b]);
      }
    }
    if (s < steps) session.step(next);
  }
  // Stepwise prompts (one token per pass, as expert offload runs them) give the same first
  // logits up to rounding.
  infer::DecodeSession stepwise(model, B);
  stepwise.set_stepwise_prompts(true);
  stepwise.start(prompts);
  for (int64_t b = 0; b < B; ++b) {
    ASSERT_EQ(stepwise.length(b), static_cast<int64_t>(prompts[b].size()));
    const std::vector<double> got(stepwise.logits(b), stepwise.logits(b) + V);
    EXPECT_TRUE(test::all_close(got, last_logits_full(model, prompts[b]), 1e-5, 1e-5))
        << cfg.arch << " stepwise row " << b;
  }
}

TEST(InferGenerate, CachedDecodingMatchesRecomputationVanilla) {
  const ModelConfig cfg = test::tiny_vanilla_config();  // max_seq_len 16
  check_cached_decoding(cfg, {{3, 7, 1, 9, 4}}, 8);
  check_cached_decoding(cfg, {{3, 7, 1}, {5}, {2, 8, 8, 1, 0, 6, 4, 9, 11}}, 9);
}

TEST(InferGenerate, CachedDecodingMatchesRecomputationDeepseek) {
  const ModelConfig cfg = test::tiny_deepseek_config();
  check_cached_decoding(cfg, {{3, 7, 1, 9, 4}}, 8);
  check_cached_decoding(cfg, {{3, 7, 1}, {5}, {2, 8, 8, 1, 0, 6, 4, 9, 11}}, 9);
}

std::vector<infer::GenerationResult> run_generate(MoeModel& model, int64_t rows,
                                                  const infer::SamplingOptions& o, int64_t n) {
  infer::DecodeSession session(model, rows);
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t r = 0; r < rows; ++r) prompts.push_back({static_cast<int32_t>(r + 1)});
  return infer::generate(session, prompts, n, o, /*stop_id=*/-1);
}

TEST(InferGenerate, SamplingIsReproducibleInTheSeed) {
  const ModelConfig cfg = test::tiny_vanilla_config();
  auto be = make_backend("cpu", 2);
  MoeModel model(cfg, test::all_losses(), *be, 3, cfg.max_seq_len);
  model.init_parameters(5);
  infer::SamplingOptions o;
  o.temperature = 1.5;
  o.top_p = 0.95;
  o.seed = 42;
  const auto a = run_generate(model, 3, o, 12), b = run_generate(model, 3, o, 12);
  bool differs = false;
  for (size_t r = 0; r < a.size(); ++r) {
    EXPECT_EQ(a[r].tokens, b[r].tokens) << "row " << r;
    EXPECT_EQ(a[r].tokens.size(), 12u);
    EXPECT_EQ(a[r].finish_reason, "length");
  }
  o.seed = 43;
  const auto c = run_generate(model, 3, o, 12);
  for (size_t r = 0; r < a.size(); ++r) differs = differs || a[r].tokens != c[r].tokens;
  EXPECT_TRUE(differs) << "seeds 42 and 43 gave the same 36 tokens";
}


// A vanilla model whose logits at every position are exactly `target`: all weights zero except
// the norm gains (1), the embeddings (all ones) and the untied head (column 0 = target). Every
// block then adds zero to the residual, so the final norm sees a row of ones.
void make_known_logits_model(MoeModel& model, const std::vector<float>& target) {
  Backend& be = model.backend();
  for (Param& p : model.params()) {
    const bool ones = p.name.find("norm.weight") != std::string::npos ||
                      p.name.find("layernorm.weight") != std::string::npos ||
                      p.name == "model.embed_tokens.weight";
    be.fill(p.value, ones ? 1.0 : 0.0);
  }
  Param& head = model.param("lm_head.weight");
  const int64_t V = head.value.shape()[0], d = head.value.shape()[1];
  std::vector<float> w(static_cast<size_t>(V * d), 0.0f);
  for (int64_t v = 0; v < V; ++v) w[v * d] = target[v];
  be.upload_vec(head.value, w);
  model.sync_lowp();
}

// Pearson chi-square of observed counts against expected probabilities, cells with expected
// count < 5 merged into one; returns (statistic, degrees of freedom).
std::pair<double, int> chi_square(const std::vector<int64_t>& counts,
                                  const std::vector<double>& probs, int64_t n) {
  double stat = 0, small_obs = 0, small_exp = 0;
  int cells = 0;
  for (size_t v = 0; v < counts.size(); ++v) {
    const double e = probs[v] * static_cast<double>(n);
    if (probs[v] == 0) continue;
    if (e < 5) {
      small_obs += static_cast<double>(counts[v]);
      small_exp += e;
      continue;
    }
    stat += (static_cast<double>(counts[v]) - e) * (static_cast<double>(counts[v]) - e) / e;
    ++cells;
  }
  if (small_exp > 0) {
    stat += (small_obs - small_exp) * (small_obs - small_exp) / small_exp;
    ++cells;
  }
  return {stat, cells - 1};
}

void check_sampled_distribution(const infer::SamplingOptions& base) {
  ModelConfig cfg = test::tiny_vanilla_config();
  cfg.tie_embeddings = false;
  auto be = make_backend("cpu", 2);
  MoeModel model(cfg, test::all_losses(), *be, 4, cfg.max_seq_len);
  std::vector<float> target(static_cast<size_t>(cfg.vocab_size));
  for (size_t v = 0; v < target.size(); ++v) target[v] = 0.15f * static_cast<float>((v * 7) % 23);
  make_known_logits_model(model, target);
  const std::vector<double> probs =
      infer::sampling_distribution(target.data(), cfg.vocab_size, base);
  std::vector<int64_t> counts(target.size(), 0);
  int64_t n = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    infer::SamplingOptions o = base;
    o.seed = seed;
    for (const auto& r : run_generate(model, 4, o, 15)) {
      for (int32_t t : r.tokens) {
        counts[t]++;
        ++n;
      }
    }
  }
  ASSERT_EQ(n, 40 * 4 * 15);
  for (size_t v = 0; v < counts.size(); ++v) {
    if (probs[v] == 0) {
      EXPECT_EQ(counts[v], 0) << "token " << v << " is outside the kept set";
    }
  }
  const auto [stat, df] = chi_square(counts, probs, n);
  // 0.999 quantiles of chi-square: the test fails by chance once in 1000 seeds sets (and the
  // seeds are fixed, so it either always passes or always fails).
  const double q999[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59,
                         31.26, 32.91, 34.53, 36.12, 37.70, 39.25, 40.79, 42.31, 43.82, 45.31,
                         46.80, 48.27};
  ASSERT_GE(df, 1);
  ASSERT_LE(df, 22);
  EXPECT_LT(stat, q999[df]) << "chi-square " << stat << " with " << df << " degrees of freedom";
}

TEST(InferGenerate, SampledTokensFollowTheKnownDistribution) {
  infer::SamplingOptions o;
  o.temperature = 0.7;
  check_sampled_distribution(o);
  o.temperature = 1.3;
  o.top_k = 8;
  o.top_p = 0.9;
  check_sampled_distribution(o);
}

TEST(InferGenerate, SamplingDistributionCutsAsDocumented) {
  const std::vector<float> logits = {0.0f, 2.0f, 1.0f, 2.0f, -1.0f};
  infer::SamplingOptions o;
  EXPECT_EQ(infer::sampling_distribution(logits.data(), 5, o),
            (std::vector<double>{0, 1, 0, 0, 0}));  // greedy: the lower id of the tie
  o.temperature = 1.0;
  o.top_k = 2;
  const auto two = infer::sampling_distribution(logits.data(), 5, o);
  EXPECT_DOUBLE_EQ(two[1], 0.5);
  EXPECT_DOUBLE_EQ(two[3], 0.5);
  o.top_k = 0;
  o.top_p = 0.3;  // the first candidate alone reaches it
  EXPECT_EQ(infer::sampling_distribution(logits.data(), 5, o),
            (std::vector<double>{0, 1, 0, 0, 0}));
  o.top_p = 0.0;
  EXPECT_THROW(infer::validate_sampling(o), Error);
}

int usage_code(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.exit_code();
  }
  return 0;
}

TEST(InferGenerate, BadPromptsAreUsageErrors) {
  const ModelConfig cfg = test::tiny_vanilla_config();
  auto be = make_backend("cpu", 1);
  MoeModel model(cfg, test::all_losses(), *be, 2, cfg.max_seq_len);
  model.init_parameters(1);
  infer::DecodeSession session(model, 2);
  EXPECT_EQ(usage_code([&] { session.start({}); }), 2);
  EXPECT_EQ(usage_code([&] { session.start({{1, 2}, {}}); }), 2);
  EXPECT_EQ(usage_code([&] { session.start({std::vector<int32_t>(17, 1)}); }), 2);
  EXPECT_EQ(usage_code([&] { session.start({{1}, {2}, {3}}); }), 2);
  EXPECT_EQ(usage_code([&] { session.start({std::vector<int32_t>(16, 1)}); }), 0);
}

}  // namespace
}  // namespace moe
