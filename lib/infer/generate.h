// Text generation over a DecodeSession: greedy or sampled next tokens until max_new_tokens, the
// end-of-sequence token, or max_seq_len, for a batch of prompts at once.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "infer/decode_session.h"
#include "infer/sampler.h"

namespace moe::infer {

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (the eos that stopped a row is not included)
  std::string finish_reason;    // "stop" (eos), "length" (max_new_tokens or max_seq_len)
};

struct GenerationTiming {
  double prefill_seconds = 0;           // start(): the prompts up to the first next-token logits
  std::vector<double> step_seconds;     // each decode step after that
};

// Called with (row, token) for each token as it is chosen (streaming).
using TokenCallback = std::function<void(int64_t row, int32_t token)>;

// stop_id < 0: never stop early. max_new_tokens >= 1 (usage error otherwise). Row b samples from
// the random stream of sequence first_row + b (sampler.h), so a prompt's sampled tokens do not
// depend on how a prompt file is cut into batches.
std::vector<GenerationResult> generate(DecodeSession& session,
                                       const std::vector<std::vector<int32_t>>& prompts,
                                       int64_t max_new_tokens, const SamplingOptions& sampling,
                                       int32_t stop_id, const TokenCallback& on_token = {},
                                       GenerationTiming* timing = nullptr,
                                       int64_t first_row = 0);

}  // namespace moe::infer
