// What evaluation needs from a language model: a causal forward pass over a batch of token rows,
// the logits of every position, and (for MoE models) the routing of the last pass. MoeScoring
// (moe_scoring.h) adapts MoeModel; tests use small analytic models so the scoring code is
// checked on its own.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"  // Batch, LayerRouting

namespace moe::eval {

class ScoringModel {
 public:
  virtual ~ScoringModel() = default;
  virtual int64_t max_rows() const = 0;  // rows per forward pass
  virtual int64_t max_seq() const = 0;   // the context length (model.max_seq_len)
  virtual int64_t vocab() const = 0;
  // Runs the model on batch.batch rows of batch.seq tokens (seq <= max_seq()). Positions must not
  // see later positions (causal), so right padding never changes earlier logits.
  virtual void forward(const Batch& batch) = 0;
  virtual std::vector<float> logits() = 0;  // [batch * seq, vocab] of the last forward
  virtual std::vector<LayerRouting> routing() { return {}; }
};

}  // namespace moe::eval
