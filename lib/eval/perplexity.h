// Perplexity and bits per byte of a text corpus (docs/model.md §4), and the routing statistics measured
// on it.
//
// Perplexity: each document (lib/data corpus reader: plain files, directories, globs, JSONL
// with a text field; newlines normalised) is tokenized and scored in the harness's rolling
// windows of the model's context (token_requests.h), the first conditioned on one eos. Every
// document token is predicted exactly once; the eos that separates documents in the training
// stream is not scored (as in the harness's loglikelihood_rolling).
//   ppl = exp(sum NLL / tokens), bits_per_byte = sum NLL / (ln 2 * UTF-8 bytes),
//   word_perplexity = exp(sum NLL / words) with words = len(re.split(r"\s+", doc)) per document.
//
// Routing: the training stream layout ([eos] doc [eos] doc ...) cut into rows of exactly the
// model's context, every position routed and counted; the last, shorter row runs in a pass of
// its own length, so no padding enters the statistics.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/loglik_scorer.h"
#include "routing/routing_stats.h"
#include "eval/token_requests.h"

namespace moe::eval {

// The routing statistics live in lib/routing (moetrain and moeinfer record them too).
using routing::LayerRoutingStats;
using routing::PathwayStats;
using routing::RoutingAccumulator;
using routing::RoutingSummary;
using routing::routing_summary_to_json;

struct PerplexityResult {
  std::string source;  // the path specs, joined
  int64_t documents = 0, tokens = 0, bytes = 0, words = 0;
  double nll_sum = 0;  // natural log
  double perplexity = 0, bits_per_byte = 0, word_perplexity = 0, byte_perplexity = 0;
  ScoringStats stats;
};

// `specs`: files, directories or globs (as data.valid). `max_docs` > 0 stops after that many.
PerplexityResult evaluate_perplexity(const std::vector<std::string>& specs,
                                     const std::string& jsonl_field, ScoringModel& model,
                                     const Encoder& encode, int32_t eos, int64_t max_docs = 0);

struct RoutingEvalResult {
  std::string source;
  RoutingSummary summary;
  ScoringStats stats;
};

// `max_tokens` > 0 stops after that many stream tokens.
RoutingEvalResult evaluate_routing(const std::vector<std::string>& specs,
                                   const std::string& jsonl_field, ScoringModel& model,
                                   const Encoder& encode, int32_t eos, bool overlap_measured,
                                   int64_t max_tokens = 0);

int64_t count_words(const std::string& text);  // len(re.split(r"\s+", text))

}  // namespace moe::eval
