// MoeScoring: MoeModel as a ScoringModel, in eval mode (forward with need_grad = false).
#pragma once
#include "eval/scoring_model.h"

namespace moe::eval {

// The model must have been built for at least max_rows x max_seq_len tokens.
class MoeScoring final : public ScoringModel {
 public:
  MoeScoring(MoeModel& model, int64_t max_rows) : model_(model), max_rows_(max_rows) {}
  int64_t max_rows() const override { return max_rows_; }
  int64_t max_seq() const override;
  int64_t vocab() const override;
  void forward(const Batch& batch) override;
  std::vector<float> logits() override;
  std::vector<LayerRouting> routing() override;

 private:
  MoeModel& model_;
  int64_t max_rows_;
};

}  // namespace moe::eval
