// Batched log-likelihood scoring of TokenRequests on a ScoringModel.
//
// Batching: each forward pass packs up to max_rows() requests as rows, longest first (as the
// harness orders them), each row right-padded to the longest row of its pass; padded positions
// carry target -1 and are never read. Causal attention makes the padding invisible.
// Sharing: a request whose model input is a prefix of another request's input is not given a row
// of its own; its log-probabilities are read from the longer row's logits (the harness's
// logits_cache idea, generalised from one-token continuations to any prefix). Multiple-choice
// requests that share a context but differ in the continuation still need one row each: MoeModel
// has no KV cache, so the shared context is recomputed for each choice.
//
// Numbers: log-softmax over the full vocabulary in double from the fp32 logits; ll is the sum
// over the continuation tokens; greedy = every continuation token is the argmax (ties to the
// lower id).
#pragma once
#include <cstdint>
#include <vector>

#include "eval/scoring_model.h"
#include "eval/token_requests.h"

namespace moe::eval {

struct ScoredRequest {
  double ll = 0;        // natural-log likelihood of the targets
  bool greedy = true;   // every target token is the argmax
  int64_t n_targets = 0;
};

struct ScoringStats {
  int64_t requests = 0, rows = 0, forward_passes = 0;
  int64_t input_tokens = 0;   // real (unpadded) tokens run through the model
  int64_t padded_tokens = 0;  // rows x seq actually computed
  double seconds = 0;
  double tokens_per_second() const { return seconds > 0 ? input_tokens / seconds : 0.0; }
  void add(const ScoringStats& o);
};

class LoglikScorer {
 public:
  // The logits of a pass are copied to the host whole (rows x seq x vocab floats); a pass holds
  // at most max_logits_floats of them (default 2^28 = 1 GiB), so large vocabularies and long
  // contexts run fewer rows per pass instead of exhausting host memory.
  explicit LoglikScorer(ScoringModel& model, int64_t max_logits_floats = int64_t{1} << 28)
      : model_(model), max_logits_floats_(max_logits_floats) {}
  // Scores every request (results in request order). Padding uses token `pad_token`.
  std::vector<ScoredRequest> score(const std::vector<TokenRequest>& requests,
                                   int32_t pad_token = 0);
  const ScoringStats& stats() const { return stats_; }

 private:
  ScoringModel& model_;
  int64_t max_logits_floats_;
  ScoringStats stats_;
};

}  // namespace moe::eval
