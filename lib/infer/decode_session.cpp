// DecodeSession (see decode_session.h).
#include "infer/decode_session.h"

#include <algorithm>

#include "core/error.h"

namespace moe::infer {

DecodeSession::DecodeSession(MoeModel& model, int64_t max_rows)
    : model_(model), max_rows_(max_rows), max_seq_(model.config().max_seq_len),
      vocab_(model.config().vocab_size) {}

void DecodeSession::start(const std::vector<std::vector<int32_t>>& prompts, int32_t pad_id) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  MOE_USAGE_CHECK(B > 0, "generation: no prompt given");
  MOE_USAGE_CHECK(B <= max_rows_, "generation: {} prompts in one batch, the model was loaded for "
                  "{}", B, max_rows_);
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = static_cast<int64_t>(prompts[b].size());
    MOE_USAGE_CHECK(n > 0, "generation: prompt {} is empty (it encodes to no token)", b + 1);
    MOE_USAGE_CHECK(n <= max_seq_, "generation: prompt {} has {} tokens, longer than the "
                    "model's max_seq_len {}", b + 1, n, max_seq_);
    longest = std::max(longest, n);
  }
  prefilled_ = 0;
  len_.assign(static_cast<size_t>(B), 0);
  done_.assign(static_cast<size_t>(B), 0);
  if (stepwise_) {
    // A one-column dummy prefill sets the cache up; every row then continues 0 cached tokens.
    Batch ctx;
    ctx.batch = B;
    ctx.seq = 1;
    ctx.inputs.assign(static_cast<size_t>(B), pad_id);
    model_.prefill_cache(ctx, max_seq_);
    std::vector<float> first(static_cast<size_t>(B * vocab_));
    for (int64_t s = 0; s < longest; ++s) {
      std::vector<int32_t> tokens(static_cast<size_t>(B), pad_id);
      std::vector<uint8_t> active(static_cast<size_t>(B), 0);
      for (int64_t b = 0; b < B; ++b) {
        if (s >= static_cast<int64_t>(prompts[b].size())) continue;
        tokens[b] = prompts[b][s];
        active[b] = 1;
      }
      run(tokens, active);
      for (int64_t b = 0; b < B; ++b) {
        if (s + 1 != static_cast<int64_t>(prompts[b].size())) continue;
        std::copy(logits(b), logits(b) + vocab_, first.begin() + b * vocab_);
      }
    }
    logits_ = std::move(first);
    return;
  }
  // Everything but each prompt's last token goes through prefill (at least one column, which a
  // one-token prompt leaves as padding: its row continues 0 cached tokens).
  Batch ctx;
  ctx.batch = B;
  ctx.seq = std::max<int64_t>(1, longest - 1);
  ctx.inputs.assign(static_cast<size_t>(B * ctx.seq), pad_id);
  std::vector<int32_t> last(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    std::copy(p.begin(), p.end() - 1, ctx.inputs.begin() + b * ctx.seq);
    len_[b] = static_cast<int32_t>(p.size() - 1);
    prefilled_ += len_[b];
    last[b] = p.back();
  }
  model_.prefill_cache(ctx, max_seq_);
  run(last, std::vector<uint8_t>(static_cast<size_t>(B), 1));
}

void DecodeSession::step(const std::vector<int32_t>& next) {
  MOE_CHECK(static_cast<int64_t>(next.size()) == rows(), "decode step: {} tokens for {} rows",
            next.size(), rows());
  std::vector<int32_t> tokens(next);
  std::vector<uint8_t> active(static_cast<size_t>(rows()), 1);
  for (int64_t b = 0; b < rows(); ++b) {
    if (room(b) == 0) done_[b] = 1;
    if (done_[b]) {
      tokens[b] = 0;  // a placeholder the row's frozen length never exposes
      active[b] = 0;
    }
  }
  run(tokens, active);
}

// One cached pass of one token per row at position len_[b]; active rows then hold one more.
void DecodeSession::run(const std::vector<int32_t>& tokens, const std::vector<uint8_t>& active) {
  const int64_t B = rows();
  Batch step;
  step.batch = B;
  step.seq = 1;
  step.inputs = tokens;
  step.targets.assign(static_cast<size_t>(B), -1);
  std::vector<int32_t> row(static_cast<size_t>(B)), at(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    row[b] = static_cast<int32_t>(b);
    // An inactive row writes at its length (overwritten by its next real token) or, when full,
    // over its own last position (never read again).
    at[b] = active[b] ? len_[b] : std::min<int32_t>(len_[b], static_cast<int32_t>(max_seq_ - 1));
  }
  model_.forward_cached(step, row, at, /*append=*/true);
  logits_ = model_.logits_host();
  for (int64_t b = 0; b < B; ++b) {
    if (active[b]) len_[b] += 1;
  }
}

}  // namespace moe::infer
