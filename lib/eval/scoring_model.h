// What evaluation needs from a language model: a causal forward pass over a batch of token rows,
// the logits of every position, and (for MoE models) the routing of the last pass. Optionally a
// KV cache: run contexts once (prefill), then only the new tokens of rows that continue them.
// MoeScoring (moe_scoring.h) adapts MoeModel; tests use small analytic models so the scoring code
// is checked on its own.
#pragma once
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "model/model.h"  // Batch, LayerRouting

namespace moe::eval {

class ScoringModel {
 public:
  virtual ~ScoringModel() = default;
  virtual int64_t max_rows() const = 0;  // rows per forward pass
  virtual int64_t max_seq() const = 0;   // the context length (model.max_seq_len)
  virtual int64_t vocab() const = 0;
  // Tokens one pass may hold (rows x seq with seq <= max_seq()); also what the KV cache holds.
  virtual int64_t max_tokens() const { return max_rows() * max_seq(); }
  // Rows one KV-cache pass may hold however short they are (a backend limit; see MoeScoring).
  virtual int64_t max_cache_pass_rows() const { return max_tokens(); }
  // Runs the model on batch.batch rows of batch.seq tokens (seq <= max_seq()). Positions must not
  // see later positions (causal), so right padding never changes earlier logits.
  virtual void forward(const Batch& batch) = 0;
  virtual std::vector<float> logits() = 0;  // [batch * seq, vocab] of the last forward
  virtual std::vector<LayerRouting> routing() { return {}; }

  // ---- optional KV cache (has_kv_cache() == true) -------------------------------------------
  virtual bool has_kv_cache() const { return false; }
  // Runs context rows (batch * seq <= max_tokens(), targets ignored) and keeps their keys and
  // values, replacing the previous contents. No logits.
  virtual void prefill(const Batch& contexts) {
    (void)contexts;
    MOE_FAIL("this scoring model has no KV cache");
  }
  // Runs `batch` whose row b continues row ctx_row[b] of the last prefill after its first
  // ctx_len[b] tokens; logits() then holds [batch * seq, vocab] for the new positions, equal (up
  // to rounding) to forward()'s logits at those positions of the concatenated rows.
  virtual void forward_cached(const Batch& batch, const std::vector<int32_t>& ctx_row,
                              const std::vector<int32_t>& ctx_len) {
    (void)batch, (void)ctx_row, (void)ctx_len;
    MOE_FAIL("this scoring model has no KV cache");
  }
};

}  // namespace moe::eval
