// From strings to scored token sequences, as lm-evaluation-harness does it (HF backend,
// docs/model.md §4.1-§4.2), with the start-of-text of docs/model.md §3: every sequence starts
// with one eos, the token every training document follows.
//
// Context / continuation split: trailing whitespace of the context moves to the continuation;
// whole = enc(ctx + cont), ctx_enc = enc(ctx), cont_enc = whole[len(ctx_enc):] (the continuation
// tokens are the tail of the JOINT encoding); the sequence is [eos] + ctx_enc + cont_enc, left-
// truncated to the newest max_length + 1 tokens.
// A continuation longer than max_length (the harness asserts there; it happens with the small
// contexts of CPU models, e.g. long piqa solutions at 128 tokens) is scored in consecutive
// pieces of at most max_length targets, each with the longest context that fits; the pieces'
// log-likelihoods add up and greedy is the AND. With continuation <= max_length there is
// exactly one piece, identical to the harness.
//
// Rolling windows (perplexity): the document's tokens are predicted in disjoint blocks of
// max_length; the first block is conditioned on [eos], each later block on the tokens before it
// up to a full window (get_rolling_token_windows + make_disjoint_window, context_len = 1).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/task.h"

namespace moe::eval {

using Encoder = std::function<std::vector<int32_t>(const std::string&)>;

// A token sequence whose last n_targets tokens are scored given everything before them. The
// model input is tokens[0 .. size-1), so n_targets <= size - 1.
struct TokenRequest {
  std::vector<int32_t> tokens;
  int64_t n_targets = 0;
};

// The harness split of (context, continuation): returns the context and continuation strings
// after moving the context's trailing whitespace.
std::pair<std::string, std::string> split_context(const std::string& context,
                                                  const std::string& continuation);

std::vector<TokenRequest> make_token_requests(const LoglikRequest& request, const Encoder& encode,
                                              int32_t start_token, int64_t max_length);
// Pieces scoring the last n_targets tokens of `sequence` (see above).
std::vector<TokenRequest> split_targets(const std::vector<int32_t>& sequence, int64_t n_targets,
                                        int64_t max_length);

// Windows covering every token of `doc_tokens` exactly once.
std::vector<TokenRequest> rolling_windows(const std::vector<int32_t>& doc_tokens,
                                          int32_t start_token, int64_t max_length);

}  // namespace moe::eval
