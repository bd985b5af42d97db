// Scoring rules of lib/eval on hand-computed examples: acc_norm by characters, the harness's
// context/continuation split (trailing whitespace, joint-encoding tail), winogrande partial
// scoring, lambada aggregation, the stderr formulas (closed form and the CPython-seeded
// bootstrap, whose expected values were computed with CPython 3.11), rolling windows, and the
// batched scorer (padding, prefix sharing) against direct per-request computation.
#include <cmath>

#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/loglik_scorer.h"
#include "eval/task_metrics.h"
#include "eval/text_utils.h"
#include "eval/token_requests.h"
#include "eval/zero_shot.h"

namespace moe::eval {
namespace {

TEST(EvalScoring, AccNormDividesByCharactersOfTheChoice) {
  // ll -10 over "abcd" (4 chars) vs -12 over "abcdefgh" (8): acc picks 0, acc_norm -2.5 < -1.5
  // picks 1.
  ChoiceScores s = score_choices({-10.0, -12.0}, {4.0, 8.0}, 1);
  EXPECT_EQ(s.acc, 0.0);
  EXPECT_EQ(s.acc_norm, 1.0);
  // Code points, not bytes: "é€x" is 3 characters (6 bytes). -3/3 = -1 vs -5/6 = -0.833.
  EXPECT_EQ(utf8_length("\xC3\xA9\xE2\x82\xACx"), 3);
  s = score_choices({-3.0, -5.0}, {3.0, 6.0}, 0);
  EXPECT_EQ(s.acc, 1.0);
  EXPECT_EQ(s.acc_norm, 0.0);
  // Ties go to the first index (np.argmax).
  s = score_choices({-2.0, -2.0}, {1.0, 1.0}, 0);
  EXPECT_EQ(s.acc, 1.0);
  EXPECT_EQ(s.acc_norm, 1.0);
}

// Toy encoder: one token per byte (id = byte + 10), except ": " which merges into token 5.
std::vector<int32_t> toy_encode(const std::string& s) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == ':' && i + 1 < s.size() && s[i + 1] == ' ') {
      out.push_back(5);
      ++i;
    } else {
      out.push_back(static_cast<unsigned char>(s[i]) + 10);
    }
  }
  return out;
}

int32_t tok(char c) { return static_cast<unsigned char>(c) + 10; }

TEST(EvalScoring, ContinuationSplitMovesTrailingSpace) {
  auto [ctx, cont] = split_context("Answer: ", "yes");
  EXPECT_EQ(ctx, "Answer:");
  EXPECT_EQ(cont, " yes");
  std::tie(ctx, cont) = split_context("Q\nA:\n \t", " no");
  EXPECT_EQ(ctx, "Q\nA:");
  EXPECT_EQ(cont, "\n \t no");
  std::tie(ctx, cont) = split_context("no space", " x");
  EXPECT_EQ(ctx, "no space");

  // ctx "Answer: " + cont "yes" -> ctx "Answer:" and cont " yes". enc(ctx + cont) merges ": "
  // into one token, enc(ctx) ends with ':' alone, so the continuation tokens are the tail of the
  // joint encoding after len(enc(ctx)) = 7 tokens: "y" "e" "s" (the space lives in the merged
  // token the model never sees, as in the harness).
  const std::vector<TokenRequest> pieces = make_token_requests({"Answer: ", "yes"}, toy_encode, 2, 100);
  ASSERT_EQ(pieces.size(), 1u);
  const TokenRequest& r = pieces[0];
  const std::vector<int32_t> expected = {2,        tok('A'), tok('n'), tok('s'), tok('w'), tok('e'),
                                         tok('r'), tok(':'), tok('y'), tok('e'), tok('s')};
  EXPECT_EQ(r.tokens, expected);
  EXPECT_EQ(r.n_targets, 3);

  // Without a merge at the boundary the continuation keeps its space token.
  const TokenRequest q = make_token_requests({"Q", " ab"}, toy_encode, 2, 100).at(0);
  EXPECT_EQ(q.tokens, (std::vector<int32_t>{2, tok('Q'), tok(' '), tok('a'), tok('b')}));
  EXPECT_EQ(q.n_targets, 3);
}

TEST(EvalScoring, LeftTruncationKeepsNewestTokens) {
  // [eos] Q x y z + " ab" = 8 tokens; max_length 5 keeps the newest 6.
  const std::vector<TokenRequest> r = make_token_requests({"Qxyz", " ab"}, toy_encode, 2, 5);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].tokens, (std::vector<int32_t>{tok('x'), tok('y'), tok('z'), tok(' '), tok('a'),
                                               tok('b')}));
  EXPECT_EQ(r[0].n_targets, 3);
}

TEST(EvalScoring, ContinuationLongerThanContextIsScoredInPieces) {
  // S = [eos] Q ' ' a b c d e f (9 tokens), 7 targets, max_length 5: the first piece predicts
  // ' ' a b c d from S[1:7], the second e f from the newest 6 tokens S[3:9].
  const std::vector<TokenRequest> r = make_token_requests({"Q", " abcdef"}, toy_encode, 2, 5);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].tokens, (std::vector<int32_t>{tok('Q'), tok(' '), tok('a'), tok('b'), tok('c'),
                                               tok('d')}));
  EXPECT_EQ(r[0].n_targets, 5);
  EXPECT_EQ(r[1].tokens, (std::vector<int32_t>{tok('a'), tok('b'), tok('c'), tok('d'), tok('e'),
                                               tok('f')}));
  EXPECT_EQ(r[1].n_targets, 2);
  // Every target token is scored exactly once.
  EXPECT_EQ(split_targets({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 10, 3).size(), 4u);
}

TEST(EvalScoring, WinograndePartialScoring) {
  // Two contexts, one suffix: pred = argmax over contexts of ll(suffix | ctx_i).
  Task task;
  task.name = "winogrande";
  task.output = TaskOutput::kMultipleInput;
  TaskDoc d;
  d.requests = {{"The cup fell because the cup", " was slippery."},
                {"The cup fell because the table", " was slippery."}};
  d.gold = 1;
  task.docs = {d, d};
  task.docs[1].gold = 0;
  const std::vector<ScoredRequest> scores = {{-5.0, false, 3}, {-4.2, false, 3},
                                             {-5.0, false, 3}, {-4.2, false, 3}};
  const TaskResult r = aggregate_task(task, 2, scores, 0);
  ASSERT_NE(r.find("acc"), nullptr);
  EXPECT_DOUBLE_EQ(r.find("acc")->value, 0.5);  // doc 0 right (1), doc 1 wrong
  EXPECT_EQ(r.find("acc_norm"), nullptr);       // winogrande reports acc only
}

TEST(EvalScoring, LambadaAggregation) {
  Task task;
  task.name = "lambada_openai";
  task.output = TaskOutput::kLoglikelihood;
  task.docs.resize(3);
  for (auto& d : task.docs) d.requests = {{"ctx", " word"}};
  const TaskResult r =
      aggregate_task(task, 3, {{-1.0, true, 1}, {-2.0, false, 2}, {-3.0, true, 1}}, 0);
  EXPECT_EQ(r.metrics[0].first, "perplexity");  // the harness's key order
  EXPECT_NEAR(r.find("perplexity")->value, std::exp(2.0), 1e-12);  // exp(-mean_doc ll)
  EXPECT_NEAR(r.find("acc")->value, 2.0 / 3.0, 1e-15);
  EXPECT_FALSE(r.find("perplexity")->stderr_value.has_value());  // bootstrap off (iters 0)
}

TEST(EvalScoring, SampleRecordsForLogSamples) {
  // moeeval --log-samples: one record per document with each choice's ll, greedy flag, token and
  // character counts, and the acc / acc_norm predictions (which differ here: the short choice
  // has the higher ll, the long one the higher ll per character).
  Task task;
  task.name = "piqa";
  task.output = TaskOutput::kMultipleChoice;
  task.reports_acc_norm = true;
  TaskDoc d;
  d.requests = {{"Question: q\nAnswer:", " b"}, {"Question: q\nAnswer:", " a long answer"}};
  d.choice_chars = {2, 14};
  d.gold = 1;
  task.docs = {d};
  const TaskResult r = aggregate_task(task, 1, {{-7.0, false, 3}, {-8.0, true, 1}}, 0);
  ASSERT_EQ(r.samples.size(), 1u);
  const SampleRecord& s = r.samples[0];
  EXPECT_EQ(s.doc_id, 0);
  EXPECT_EQ(s.prompt, "Question: q\nAnswer:");
  EXPECT_EQ(s.choices, (std::vector<std::string>{" b", " a long answer"}));
  EXPECT_EQ(s.lls, (std::vector<double>{-7.0, -8.0}));
  EXPECT_EQ(s.greedy, (std::vector<bool>{false, true}));
  EXPECT_EQ(s.n_tokens, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(s.n_chars, (std::vector<double>{2, 14}));
  EXPECT_EQ(s.gold, 1);
  EXPECT_EQ(s.pred, 0);       // -7 > -8
  EXPECT_EQ(s.pred_norm, 1);  // -7 / 2 = -3.5 < -8 / 14 = -0.57
  EXPECT_DOUBLE_EQ(s.acc, 0.0);
  EXPECT_DOUBLE_EQ(s.acc_norm, 1.0);
  EXPECT_DOUBLE_EQ(r.find("acc_norm")->value, 1.0);
}

TEST(EvalScoring, StderrOfTheMean) {
  // sample std (n-1) / sqrt(n); for 0/1 data sqrt(p(1-p)/(n-1)) = sqrt(.6 * .4 / 4).
  const auto s = mean_stderr({1, 0, 1, 1, 0});
  ASSERT_TRUE(s.has_value());
  EXPECT_NEAR(*s, std::sqrt(0.6 * 0.4 / 4), 1e-15);
  EXPECT_NEAR(*s, 0.24494897427831783, 1e-15);  // CPython: sample_stddev(x) / sqrt(5)
  EXPECT_FALSE(mean_stderr({1}).has_value());    // "N/A" for one item
}

TEST(EvalScoring, CPythonRandomStream) {
  PyRandom r0(0);
  EXPECT_DOUBLE_EQ(r0.random(), 0.8444218515250481);  // random.Random(0).random()
  EXPECT_DOUBLE_EQ(r0.random(), 0.7579544029403025);
  PyRandom r7(7);
  EXPECT_DOUBLE_EQ(r7.random(), 0.32383276483316237);
  EXPECT_EQ(r7.genrand_uint32(), 647892279u);  // then getrandbits(32)
}

TEST(EvalScoring, BootstrapPerplexityStderrMatchesHarness) {
  // The harness's bootstrap_stderr(perplexity, xs, 3000), run in CPython 3.11.
  const std::vector<double> xs = {-1.0, -2.5, -0.3, -4.0, -1.7, -0.9, -3.3};
  const auto s = bootstrap_perplexity_stderr(xs, 3000);
  ASSERT_TRUE(s.has_value());
  EXPECT_NEAR(*s, 4.083753044850035, 1e-9);
}

TEST(EvalScoring, RollingWindowsPredictEveryTokenOnce) {
  std::vector<int32_t> toks;
  for (int i = 0; i < 10; ++i) toks.push_back(10 + i);
  const auto w = rolling_windows(toks, 2, 4);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].tokens, (std::vector<int32_t>{2, 10, 11, 12, 13}));
  EXPECT_EQ(w[0].n_targets, 4);
  // Later full blocks are conditioned on one token; the last, partial block gets a full window.
  EXPECT_EQ(w[1].tokens, (std::vector<int32_t>{13, 14, 15, 16, 17}));
  EXPECT_EQ(w[1].n_targets, 4);
  EXPECT_EQ(w[2].tokens, (std::vector<int32_t>{15, 16, 17, 18, 19}));
  EXPECT_EQ(w[2].n_targets, 2);
  EXPECT_EQ(rolling_windows({7}, 2, 4)[0].tokens, (std::vector<int32_t>{2, 7}));
}

// A causal toy model whose logits at position p depend on every input token up to p and on p.
float toy_logit(const std::vector<int32_t>& prefix, int64_t v) {
  double h = 0;
  for (size_t q = 0; q < prefix.size(); ++q) h += (prefix[q] + 1) * 0.37 * (q + 1);
  return static_cast<float>(3.0 * std::sin(0.7 * v + h + 0.11 * prefix.size()));
}

class ToyModel final : public ScoringModel {
 public:
  explicit ToyModel(int64_t rows) : rows_(rows) {}
  int64_t max_rows() const override { return rows_; }
  int64_t max_seq() const override { return 16; }
  int64_t vocab() const override { return 11; }
  void forward(const Batch& b) override {
    EXPECT_LE(b.batch, rows_);
    EXPECT_LE(b.seq, max_seq());
    logits_.assign(b.batch * b.seq * vocab(), 0.0f);
    for (int64_t r = 0; r < b.batch; ++r) {
      std::vector<int32_t> prefix;
      for (int64_t p = 0; p < b.seq; ++p) {
        prefix.push_back(b.inputs[r * b.seq + p]);
        for (int64_t v = 0; v < vocab(); ++v) logits_[(r * b.seq + p) * vocab() + v] = toy_logit(prefix, v);
      }
    }
    ++passes;
  }
  std::vector<float> logits() override { return logits_; }
  int passes = 0;

 private:
  int64_t rows_;
  std::vector<float> logits_;
};

// ToyModel with a KV cache: prefill keeps the context rows, forward_cached computes the logits of
// the concatenation (context prefix + new tokens) exactly, so the scorer's cached path must give
// the direct numbers to rounding of the log-softmax sums. It also checks the scorer's use of the
// interface (capacity, spans inside the cached rows).
class CachedToyModel final : public ScoringModel {
 public:
  explicit CachedToyModel(int64_t rows) : rows_(rows) {}
  int64_t max_rows() const override { return rows_; }
  int64_t max_seq() const override { return 16; }
  int64_t vocab() const override { return 11; }
  void forward(const Batch& b) override {
    EXPECT_LE(b.batch, rows_);
    std::vector<std::vector<int32_t>> empty(static_cast<size_t>(b.batch));
    run(b, empty);
    ++plain_passes;
  }
  bool has_kv_cache() const override { return true; }
  int64_t max_cache_pass_rows() const override { return pass_rows; }
  void prefill(const Batch& b) override {
    EXPECT_LE(b.batch * b.seq, max_tokens());
    EXPECT_LE(b.batch, pass_rows);
    EXPECT_LE(b.seq, max_seq());
    contexts_.clear();
    for (int64_t r = 0; r < b.batch; ++r) {
      contexts_.emplace_back(b.inputs.begin() + r * b.seq, b.inputs.begin() + (r + 1) * b.seq);
    }
    ++prefills;
  }
  void forward_cached(const Batch& b, const std::vector<int32_t>& ctx_row,
                      const std::vector<int32_t>& ctx_len) override {
    EXPECT_LE(b.batch * b.seq, max_tokens());
    EXPECT_LE(b.batch, pass_rows);
    std::vector<std::vector<int32_t>> prefixes;
    for (int64_t r = 0; r < b.batch; ++r) {
      const auto& ctx = contexts_.at(static_cast<size_t>(ctx_row[r]));
      EXPECT_LE(static_cast<size_t>(ctx_len[r]), ctx.size());
      prefixes.emplace_back(ctx.begin(), ctx.begin() + ctx_len[r]);
    }
    run(b, prefixes);
    ++cached_passes;
  }
  std::vector<float> logits() override { return logits_; }
  int plain_passes = 0, prefills = 0, cached_passes = 0;
  int64_t pass_rows = 1 << 30;  // the model's limit on rows per KV-cache pass

 private:
  void run(const Batch& b, const std::vector<std::vector<int32_t>>& prefixes) {
    logits_.assign(b.batch * b.seq * vocab(), 0.0f);
    for (int64_t r = 0; r < b.batch; ++r) {
      std::vector<int32_t> prefix = prefixes[r];
      for (int64_t p = 0; p < b.seq; ++p) {
        prefix.push_back(b.inputs[r * b.seq + p]);
        for (int64_t v = 0; v < vocab(); ++v) {
          logits_[(r * b.seq + p) * vocab() + v] = toy_logit(prefix, v);
        }
      }
    }
  }
  int64_t rows_;
  std::vector<std::vector<int32_t>> contexts_;
  std::vector<float> logits_;
};

// Direct computation of one request: log-softmax at each target position, in double.
ScoredRequest direct(const TokenRequest& r, int64_t vocab) {
  ScoredRequest s;
  const int64_t n = static_cast<int64_t>(r.tokens.size()) - 1;
  for (int64_t p = n - r.n_targets; p < n; ++p) {
    const std::vector<int32_t> prefix(r.tokens.begin(), r.tokens.begin() + p + 1);
    double z = 0, best = -1e30;
    int64_t arg = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      z += std::exp(static_cast<double>(toy_logit(prefix, v)));
      if (toy_logit(prefix, v) > best) {
        best = toy_logit(prefix, v);
        arg = v;
      }
    }
    s.ll += toy_logit(prefix, r.tokens[p + 1]) - std::log(z);
    s.greedy = s.greedy && arg == r.tokens[p + 1];
  }
  return s;
}

TEST(EvalScoring, BatchedScorerMatchesDirectComputation) {
  // Requests of several lengths, inputs that prefix others ({1,2,3} served by the row of
  // {1,2,3,4,5}; two one-token continuations of the same context), and one whose target is the
  // greedy argmax.
  std::vector<TokenRequest> reqs = {
      {{2, 1, 2, 3, 4, 5}, 2}, {{2, 1, 2, 3}, 1},    {{2, 7, 7}, 1},       {{2, 7, 8}, 1},
      {{2, 9, 1, 0, 4, 4, 6, 3, 2}, 5}, {{2, 5}, 1}, {{2, 3, 3, 3, 3}, 4},
  };
  {  // make request 5's target the argmax after [2]
    double best = -1e30;
    for (int64_t v = 0; v < 11; ++v) {
      if (toy_logit({2}, v) > best) {
        best = toy_logit({2}, v);
        reqs[5].tokens[1] = static_cast<int32_t>(v);
      }
    }
  }
  for (int64_t rows : {1, 3, 8}) {
    ToyModel model(rows);
    LoglikScorer scorer(model);
    const std::vector<ScoredRequest> got = scorer.score(reqs);
    ASSERT_EQ(got.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      const ScoredRequest want = direct(reqs[i], 11);
      EXPECT_NEAR(got[i].ll, want.ll, 1e-5) << "request " << i << " rows " << rows;
      EXPECT_EQ(got[i].greedy, want.greedy) << "request " << i;
      EXPECT_EQ(got[i].n_targets, reqs[i].n_targets);
    }
    EXPECT_TRUE(got[5].greedy);
    // A logits budget of one longest row (8 positions x 11 ids): the 8-token row runs alone,
    // shorter rows share passes as the budget allows; the numbers do not change.
    LoglikScorer small(model, 8 * 11);
    const std::vector<ScoredRequest> again = small.score(reqs);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_NEAR(again[i].ll, got[i].ll, 1e-9);
    EXPECT_EQ(small.stats().rows, 4);
    EXPECT_EQ(small.stats().forward_passes, rows == 1 ? 4 : 3);  // inputs 8 | 5 | 4 + 2
    // 7 requests, 3 served by longer rows: {1,2,3} by {1,2,3,4,5}, {7,7} and {7,8} share input
    // [2,7], and [2] (request 5's input) prefixes every other input.
    EXPECT_EQ(scorer.stats().rows, 4);
    EXPECT_EQ(scorer.stats().requests, 7);
  }
}

TEST(EvalScoring, KvCacheScorerMatchesDirectComputation) {
  // The first scored input position of a request is its input length minus its targets; its
  // context is the input before it. Choices of context [2,4,6] (requests 0-3; 0 and 1 are
  // prefixes of 3's input and ride on its row, 2 has a row of its own); of context [2,9] (4, 5);
  // of a 10-token context with continuations that fill the 16-token model context exactly
  // (8, 9); a lone context (6) and a request without context (7) take the plain path; 10 has
  // nothing to score.
  const std::vector<TokenRequest> reqs = {
      {{2, 4, 6, 8, 1, 3}, 2},
      {{2, 4, 6, 8, 5}, 1},
      {{2, 4, 6, 8, 2, 2, 7}, 3},
      {{2, 4, 6, 8, 1, 3, 7, 7}, 4},
      {{2, 9, 9, 0}, 1},
      {{2, 9, 1, 3, 3, 3}, 3},
      {{2, 4, 6, 1, 1}, 2},
      {{5, 6, 7}, 2},
      {{2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 5}, 6},
      {{2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 9, 2, 3, 4, 5}, 6},
      {{2, 4, 6, 8, 2}, 0},
  };
  for (int64_t rows : {1, 3, 8}) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    CachedToyModel model(rows);
    LoglikScorer scorer(model);
    const std::vector<ScoredRequest> got = scorer.score(reqs);
    ASSERT_EQ(got.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      const ScoredRequest want = direct(reqs[i], 11);
      EXPECT_NEAR(got[i].ll, want.ll, 1e-5) << "request " << i;
      EXPECT_EQ(got[i].greedy, want.greedy) << "request " << i;
    }
    // The same through the plain path (kv_cache off), and under a logits budget of one row.
    CachedToyModel plain_model(rows);
    LoglikScorer plain(plain_model, int64_t{1} << 28, /*kv_cache=*/false);
    const std::vector<ScoredRequest> again = plain.score(reqs);
    LoglikScorer small(model, 16 * 11);
    const std::vector<ScoredRequest> tight = small.score(reqs);
    CachedToyModel two_rows(rows);  // at most 2 rows per KV-cache pass however short
    two_rows.pass_rows = 2;
    LoglikScorer limited(two_rows);
    const std::vector<ScoredRequest> split = limited.score(reqs);
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_NEAR(again[i].ll, got[i].ll, 1e-9) << "request " << i;
      EXPECT_NEAR(tight[i].ll, got[i].ll, 1e-9) << "request " << i;
      EXPECT_NEAR(split[i].ll, got[i].ll, 1e-9) << "request " << i;
    }
    EXPECT_EQ(plain_model.prefills + plain_model.cached_passes, 0);
    // Contexts [2,4,6], [2,9] and the 10-token one run once each, 6 continuation rows.
    const ScoringStats& st = scorer.stats();
    EXPECT_EQ(st.cached_contexts, 3);
    EXPECT_EQ(st.cached_rows, 6);
    EXPECT_EQ(st.request_tokens, 5 + 4 + 6 + 7 + 3 + 5 + 4 + 2 + 16 + 16);
    EXPECT_EQ(plain.stats().request_tokens, st.request_tokens);
    // Computed: contexts 3 + 2 + 10, continuations (7-3) + (6-3) + (3-2) + (5-2) + 6 + 6, plain
    // rows 4 + 2; without the cache one whole row per host.
    EXPECT_EQ(st.input_tokens, 15 + 23 + 6);
    EXPECT_EQ(plain.stats().input_tokens, 7 + 6 + 3 + 5 + 4 + 2 + 16 + 16);
    EXPECT_GT(model.prefills, 0);
  }
}

TEST(EvalScoring, EvaluateTaskEndToEndOnToyModel) {
  // A multiple-choice task through requests, batching and aggregation. Encoder: ' ' -> 0,
  // 'a' -> 1, anything else -> 3. Choice lls computed directly give the expected predictions.
  auto enc = [](const std::string& s) {
    std::vector<int32_t> out;
    for (char c : s) out.push_back(c == ' ' ? 0 : c == 'a' ? 1 : 3);
    return out;
  };
  const double ll0 = direct({{2, 1, 3, 0, 1}, 2}, 11).ll;           // "ab" + " a"
  const double ll1 = direct({{2, 1, 3, 0, 3, 3, 3}, 4}, 11).ll;     // "ab" + " bbb"
  const int64_t pred = ll1 > ll0 ? 1 : 0, pred_norm = ll1 / 3 > ll0 / 1 ? 1 : 0;
  Task task;
  task.name = "toy";
  task.reports_acc_norm = true;
  for (int64_t gold : {pred, pred_norm, int64_t{1}}) {
    TaskDoc doc;
    doc.requests = {{"ab", " a"}, {"ab", " bbb"}};
    doc.choice_chars = {1, 3};
    doc.gold = gold;
    task.docs.push_back(doc);
  }
  ToyModel model(4);
  ZeroShotOptions opt;
  opt.limit = 2;  // the third document is not scored
  const TaskResult r = evaluate_task(task, model, enc, opt);
  EXPECT_EQ(r.n_effective, 2);
  EXPECT_EQ(r.n_original, 3);
  const double same = pred == pred_norm ? 1.0 : 0.0;
  EXPECT_DOUBLE_EQ(r.find("acc")->value, (1.0 + same) / 2);
  EXPECT_DOUBLE_EQ(r.find("acc_norm")->value, (same + 1.0) / 2);
  EXPECT_EQ(r.stats.requests, 4);
  EXPECT_EQ(r.metrics[0].first, "acc");
  EXPECT_EQ(r.metrics[1].first, "acc_norm");
}

}  // namespace
}  // namespace moe::eval
