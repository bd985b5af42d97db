// Incremental decoding of a batch of sequences over the model's KV cache: start() runs the
// prompts (of different lengths), step() appends one token per sequence and runs it. After each
// call logits(b) holds the next-token logits of sequence b.
//
// How start() works on the cached ops: prefill_cache runs every prompt but its last token
// (right-padded to the longest, each row reserving max_seq_len cache positions), then one
// forward_cached pass with append runs each prompt's last token at its own position, which gives
// the first next-token logits; every step() is one more such pass of one token per row. A row's
// cache positions past its length hold padding or stale values that no query attends to.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace moe::infer {

class DecodeSession {
 public:
  // The model must have been built for at least max_rows x max_seq_len tokens.
  DecodeSession(MoeModel& model, int64_t max_rows);

  // Usage errors (exit 2): no prompt, an empty prompt, a prompt longer than max_seq_len, more
  // rows than max_rows. pad_id fills the padding (any valid id; it never reaches a real token).
  void start(const std::vector<std::vector<int32_t>>& prompts, int32_t pad_id = 0);
  // Appends next[b] to each sequence that is still active and runs them. A row that is done
  // (set_done) or full (length() == max_seq_len) ignores its token: it keeps its length and its
  // logits are no longer meaningful.
  void step(const std::vector<int32_t>& next);
  void set_done(int64_t row) { done_[static_cast<size_t>(row)] = 1; }
  bool done(int64_t row) const { return done_[static_cast<size_t>(row)] != 0; }
  // Positions a sequence can still grow by (0: full).
  int64_t room(int64_t row) const { return max_seq_ - length(row); }
  int64_t rows() const { return static_cast<int64_t>(len_.size()); }
  int64_t length(int64_t row) const { return len_[static_cast<size_t>(row)]; }
  int64_t vocab() const { return vocab_; }
  const float* logits(int64_t row) const { return &logits_[static_cast<size_t>(row * vocab_)]; }
  // Stepwise prompts (expert offload): start() feeds the prompts one token per row and pass, so no
  // pass needs more experts than a batch of single tokens does; same logits up to rounding.
  void set_stepwise_prompts(bool on) { stepwise_ = on; }
  // Tokens the last start() prefilled (prompt tokens but the last of each row, padding excluded).
  int64_t prefilled_tokens() const { return prefilled_; }

 private:
  void run(const std::vector<int32_t>& tokens, const std::vector<uint8_t>& active);
  MoeModel& model_;
  int64_t max_rows_, max_seq_, vocab_;
  std::vector<int32_t> len_;     // tokens each row holds in the cache after the last call
  std::vector<uint8_t> done_;
  std::vector<float> logits_;    // [rows, vocab]
  int64_t prefilled_ = 0;
  bool stepwise_ = false;
};

}  // namespace moe::infer
