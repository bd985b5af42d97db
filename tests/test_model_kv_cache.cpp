// MoeModel's incremental eval forward (prefill_cache + forward_cached) against forward() on the
// concatenated sequences, for the vanilla and deepseek tiny configs: several rows with different
// context lengths in one batch, two rows continuing the same cached context, a row using only a
// prefix of its cached context, a row with no context, a context + continuation that exactly
// fills max_seq_len, continuation lengths 1 and > 1; with and without activation recomputation.
//
// Tolerances on the logits (|got - want| <= tol + tol * |want|): f64 compute 1e-9 (the paths
// differ only in summation order, so the agreement is at rounding level); f32 compute 2e-5
// (fp32 rounding of the two summation orders, ~1e-7 relative per op, accumulated over 3 layers
// and the head; the measured worst case is 1.5e-6 on logits of magnitude ~1-3).
#include <algorithm>
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/error.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace moe {
namespace {

struct Continuation {
  int32_t ctx_row = 0, ctx_len = 0;
  std::vector<int32_t> tokens;
};

// Logits of forward() on one sequence alone, positions [from, size).
std::vector<double> full_logits(MoeModel& model, const std::vector<int32_t>& seq, size_t from) {
  Batch b;
  b.batch = 1;
  b.seq = static_cast<int64_t>(seq.size());
  b.inputs = seq;
  b.targets.assign(seq.size(), -1);
  model.forward(b, /*need_grad=*/false);
  const std::vector<float> all = model.logits_host();
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  return std::vector<double>(all.begin() + from * V, all.end());
}

Batch rows_batch(const std::vector<std::vector<int32_t>>& rows, int32_t pad) {
  Batch b;
  b.batch = static_cast<int64_t>(rows.size());
  for (const auto& r : rows) b.seq = std::max<int64_t>(b.seq, static_cast<int64_t>(r.size()));
  b.inputs.assign(b.batch * b.seq, pad);
  b.targets.assign(b.batch * b.seq, -1);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy(rows[i].begin(), rows[i].end(), b.inputs.begin() + i * b.seq);
  }
  return b;
}

// Runs the cached passes and compares every real continuation position with forward().
void expect_cached_matches_full(MoeModel& model, const std::vector<std::vector<int32_t>>& contexts,
                                const std::vector<Continuation>& conts, double tol) {
  const int64_t V = model.config().vocab_size;
  model.prefill_cache(rows_batch(contexts, 1));
  std::vector<std::vector<int32_t>> new_rows;
  std::vector<int32_t> ctx_row, ctx_len;
  for (const Continuation& c : conts) {
    new_rows.push_back(c.tokens);
    ctx_row.push_back(c.ctx_row);
    ctx_len.push_back(c.ctx_len);
  }
  const Batch b = rows_batch(new_rows, 1);
  model.forward_cached(b, ctx_row, ctx_len);
  const std::vector<float> cached = model.logits_host();
  ASSERT_EQ(static_cast<int64_t>(cached.size()), b.batch * b.seq * V);
  for (size_t r = 0; r < conts.size(); ++r) {
    const Continuation& c = conts[r];
    std::vector<int32_t> seq(contexts[c.ctx_row].begin(), contexts[c.ctx_row].begin() + c.ctx_len);
    seq.insert(seq.end(), c.tokens.begin(), c.tokens.end());
    const std::vector<double> want = full_logits(model, seq, c.ctx_len);
    const auto first = cached.begin() + static_cast<int64_t>(r) * b.seq * V;
    const std::vector<double> got(first, first + static_cast<int64_t>(c.tokens.size()) * V);
    EXPECT_TRUE(test::all_close(got, want, tol, tol))
        << "row " << r << ": context row " << c.ctx_row << " (" << c.ctx_len << " tokens), "
        << c.tokens.size() << " new tokens";
  }
}

std::vector<int32_t> ids(size_t n, int64_t vocab, uint64_t seed) {
  return test::random_ints(n, static_cast<int32_t>(vocab), seed);
}

void check_config(const ModelConfig& cfg, DType dtype, double tol, bool recompute) {
  auto be = make_backend("cpu", 2);
  MoeModel model(cfg, test::all_losses(), *be, 4, cfg.max_seq_len, dtype, recompute);
  model.init_parameters(5);
  const int64_t V = cfg.vocab_size, L = cfg.max_seq_len;  // L = 16 in the tiny configs
  const std::vector<std::vector<int32_t>> contexts = {ids(5, V, 1), ids(1, V, 2), ids(9, V, 3),
                                                      ids(3, V, 4)};
  // Continuation lengths > 1 (and one of 1) in one batch.
  std::vector<Continuation> conts = {
      {0, 5, ids(1, V, 10)},          // two choices of context 0
      {0, 5, ids(4, V, 11)},
      {1, 1, ids(3, V, 12)},
      {2, 9, ids(L - 9, V, 13)},      // 9 + 7 = max_seq_len exactly
      {3, 2, ids(2, V, 14)},          // only the first 2 of the 3 cached tokens
      {3, 0, ids(5, V, 15)},          // no context: plain causal attention
  };
  {
    SCOPED_TRACE("continuations of several lengths");
    expect_cached_matches_full(model, contexts, conts, tol);
  }
  for (Continuation& c : conts) c.tokens.resize(1);
  {
    SCOPED_TRACE("one-token continuations");
    expect_cached_matches_full(model, contexts, conts, tol);
  }
}

TEST(ModelKvCache, VanillaMatchesFullForward) {
  check_config(test::tiny_vanilla_config(), DType::kF64, 1e-9, false);
  check_config(test::tiny_vanilla_config(), DType::kF32, 2e-5, false);
}

TEST(ModelKvCache, DeepseekMatchesFullForward) {
  check_config(test::tiny_deepseek_config(), DType::kF64, 1e-9, false);
  check_config(test::tiny_deepseek_config(), DType::kF32, 2e-5, false);
}

TEST(ModelKvCache, WorksWithActivationRecomputation) {
  check_config(test::tiny_deepseek_config(), DType::kF64, 1e-9, true);
}

// The training path is untouched: forward/backward after cached passes give bitwise the numbers
// of a fresh model, and backward() refuses to follow a cached pass.
TEST(ModelKvCache, LeavesTheTrainingPathAlone) {
  const ModelConfig cfg = test::tiny_vanilla_config();
  auto be = make_backend("cpu", 1);
  const Batch batch = test::random_batch(2, 8, cfg.vocab_size, 21);
  auto train_step = [&](MoeModel& m) {
    m.forward(batch);
    m.zero_grad();
    m.backward();
    std::vector<float> out = m.logits_host();
    for (Param& p : m.params()) {
      const std::vector<float> g = be->download_vec<float>(p.grad);
      out.insert(out.end(), g.begin(), g.end());
    }
    return out;
  };
  MoeModel fresh(cfg, test::all_losses(), *be, 2, cfg.max_seq_len);
  fresh.init_parameters(9);
  MoeModel used(cfg, test::all_losses(), *be, 2, cfg.max_seq_len);
  used.init_parameters(9);
  used.prefill_cache(rows_batch({ids(6, cfg.vocab_size, 30)}, 0));
  used.forward_cached(rows_batch({ids(3, cfg.vocab_size, 31)}, 0), {0}, {6});
  EXPECT_THROW(used.backward(), Error);
  const std::vector<float> a = train_step(fresh), b = train_step(used);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << "training numbers changed";
}

TEST(ModelKvCache, RejectsBadSpansAndMissingPrefill) {
  const ModelConfig cfg = test::tiny_vanilla_config();
  auto be = make_backend("cpu", 1);
  MoeModel model(cfg, test::all_losses(), *be, 2, cfg.max_seq_len);
  model.init_parameters(3);
  const Batch cont = rows_batch({ids(2, cfg.vocab_size, 40)}, 0);
  EXPECT_THROW(model.forward_cached(cont, {0}, {1}), Error);  // no prefill yet
  model.prefill_cache(rows_batch({ids(4, cfg.vocab_size, 41), ids(3, cfg.vocab_size, 42)}, 0));
  EXPECT_NO_THROW(model.forward_cached(cont, {1}, {4}));
  EXPECT_THROW(model.forward_cached(cont, {2}, {1}), Error);     // context row out of range
  EXPECT_THROW(model.forward_cached(cont, {0}, {5}), Error);     // more than the 4 cached
  EXPECT_THROW(model.forward_cached(cont, {0}, {-1}), Error);
  EXPECT_THROW(model.forward_cached(cont, {0, 1}, {1, 1}), Error);  // one span per row
  model.prefill_cache(rows_batch({ids(4, cfg.vocab_size, 43)}, 0));
  EXPECT_THROW(model.logits_host(), Error);  // prefill has no head
}

}  // namespace
}  // namespace moe
