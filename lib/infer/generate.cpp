// Batch generation loop (see generate.h).
#include "infer/generate.h"

#include <chrono>

#include "core/error.h"

namespace moe::infer {

std::vector<GenerationResult> generate(DecodeSession& session,
                                       const std::vector<std::vector<int32_t>>& prompts,
                                       int64_t max_new_tokens, const SamplingOptions& sampling,
                                       int32_t stop_id, const TokenCallback& on_token,
                                       GenerationTiming* timing, int64_t first_row) {
  MOE_USAGE_CHECK(max_new_tokens >= 1, "--max-new-tokens must be >= 1, got {}", max_new_tokens);
  using Clock = std::chrono::steady_clock;
  const int64_t B = static_cast<int64_t>(prompts.size());
  Sampler sampler(sampling, B, first_row);
  auto t0 = Clock::now();
  session.start(prompts);
  if (timing != nullptr) {
    timing->prefill_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    timing->step_seconds.clear();
  }
  std::vector<GenerationResult> out(static_cast<size_t>(B));
  std::vector<int32_t> next(static_cast<size_t>(B), 0);
  for (int64_t produced = 0;; ++produced) {
    bool any_active = false;
    for (int64_t b = 0; b < B; ++b) {
      if (session.done(b)) continue;
      const int32_t tok = sampler.sample(b, session.logits(b), session.vocab());
      if (tok == stop_id) {
        out[b].finish_reason = "stop";
        session.set_done(b);
        continue;
      }
      out[b].tokens.push_back(tok);
      if (on_token) on_token(b, tok);
      next[b] = tok;
      // The next step would need one more position than the row has, or the budget is spent.
      if (produced + 1 >= max_new_tokens || session.room(b) == 0) {
        out[b].finish_reason = "length";
        session.set_done(b);
        continue;
      }
      any_active = true;
    }
    if (!any_active) break;
    t0 = Clock::now();
    session.step(next);
    if (timing != nullptr) {
      timing->step_seconds.push_back(
          std::chrono::duration<double>(Clock::now() - t0).count());
    }
  }
  return out;
}

}  // namespace moe::infer
