// Batched log-likelihood scoring of TokenRequests on a ScoringModel.
//
// Rows: a request whose model input is a prefix of another request's input is not given a row
// of its own; its log-probabilities are read from the longer row's logits (the harness's
// logits_cache idea, generalised from one-token continuations to any prefix). Each remaining row
// needs the logits of positions [first, n): first = the earliest scored position of the requests
// it serves, n = its input length. Its "context" is its input before `first`.
//
// KV cache (when the model has one and it is not switched off): rows are grouped by identical
// context (the choices of a multiple-choice question share the question's tokens; left
// truncation or differing contexts give groups of one). Every group of two or more rows with a
// non-empty context, and every lone row whose context is at least 4x as long as its scored
// positions (MMLU: one row serves the four one-token answers; lambada's last word), is scored
// incrementally:
//   1. context pass (ScoringModel::prefill): the distinct contexts, longest first, as many per
//      pass as max_tokens() allows (each context once, right-padded to the longest of its pass);
//   2. continuation passes (ScoringModel::forward_cached): each row's positions [first, n) only,
//      continuing its context in the cache; rows sorted longest first and packed by max_tokens()
//      and the logits budget.
//   Both kinds of pass take only items at least 3/4 as long as their longest, so padding stays
//   under 25% of a pass, and at most max_cache_pass_rows() rows (MoeScoring: the CUDA attention
//   grid's 65535 (row, head) pairs).
// The model cannot tell the difference (a continuation token attends to the same keys and values
// as in the full row), so the scores equal those of the plain path up to fp32 rounding; the
// shared context is computed once instead of once per choice, and a lone row's context skips
// the vocabulary head (prefill computes none) and the copy of its logits to the host. The other
// rows (perplexity windows, winogrande's distinct contexts, short contexts) take the plain path.
//
// Plain path: up to max_rows() rows per forward pass, longest first (as the harness orders
// them), each right-padded to the longest row of its pass; padded positions carry target -1 and
// are never read. Causal attention makes the padding invisible.
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

// Token counts: request_tokens is the work the requests stand for (each request's input scored
// alone); input_tokens is what the model actually computed (a shared row or a cached context
// counted once); padded_tokens adds the right padding of each pass.
struct ScoringStats {
  int64_t requests = 0, rows = 0, forward_passes = 0;
  int64_t request_tokens = 0;  // sum of the input lengths of the scored requests
  int64_t input_tokens = 0;    // real (unpadded) tokens run through the model
  int64_t padded_tokens = 0;   // rows x seq actually computed
  int64_t cached_contexts = 0; // contexts run once into the KV cache
  int64_t cached_rows = 0;     // continuation rows run against the cache
  double seconds = 0;
  // Evaluation tokens/s: request tokens scored per second.
  double tokens_per_second() const { return seconds > 0 ? request_tokens / seconds : 0.0; }
  // Tokens the model computed per second.
  double computed_tokens_per_second() const {
    return seconds > 0 ? input_tokens / seconds : 0.0;
  }
  void add(const ScoringStats& o);
};

class LoglikScorer {
 public:
  // The logits of a pass are copied to the host whole (rows x seq x vocab floats); a pass holds
  // at most max_logits_floats of them (default 2^28 = 1 GiB), so large vocabularies and long
  // contexts run fewer rows per pass instead of exhausting host memory. kv_cache = false scores
  // every row on the plain path (for comparisons and benchmarks).
  explicit LoglikScorer(ScoringModel& model, int64_t max_logits_floats = int64_t{1} << 28,
                        bool kv_cache = true)
      : model_(model), max_logits_floats_(max_logits_floats), kv_cache_(kv_cache) {}
  // Scores every request (results in request order). Padding uses token `pad_token`.
  std::vector<ScoredRequest> score(const std::vector<TokenRequest>& requests,
                                   int32_t pad_token = 0);
  const ScoringStats& stats() const { return stats_; }

 private:
  ScoringModel& model_;
  int64_t max_logits_floats_;
  bool kv_cache_;
  ScoringStats stats_;
};

}  // namespace moe::eval
