// MoeScoring: MoeModel as a ScoringModel, in eval mode (forward with need_grad = false), with
// MoeModel's KV cache (prefill_cache / forward_cached).
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
  bool has_kv_cache() const override { return true; }
  // The CUDA attention kernels index (row, head) pairs with gridDim.y: 65535 / n_heads rows.
  int64_t max_cache_pass_rows() const override;
  void prefill(const Batch& contexts) override;
  void forward_cached(const Batch& batch, const std::vector<int32_t>& ctx_row,
                      const std::vector<int32_t>& ctx_len) override;
  std::vector<float> logits() override;
  std::vector<LayerRouting> routing() override;

 private:
  MoeModel& model_;
  int64_t max_rows_;
};

}  // namespace moe::eval
