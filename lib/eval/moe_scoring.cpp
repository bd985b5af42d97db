// MoeScoring: forwards to MoeModel (see moe_scoring.h).
#include "eval/moe_scoring.h"

#include <algorithm>

namespace moe::eval {

int64_t MoeScoring::max_seq() const { return model_.config().max_seq_len; }
int64_t MoeScoring::vocab() const { return model_.config().vocab_size; }
int64_t MoeScoring::max_cache_pass_rows() const {
  return std::max<int64_t>(1, 65535 / model_.config().n_heads);
}
void MoeScoring::forward(const Batch& batch) { model_.forward(batch, /*need_grad=*/false); }
void MoeScoring::prefill(const Batch& contexts) { model_.prefill_cache(contexts); }
void MoeScoring::forward_cached(const Batch& batch, const std::vector<int32_t>& ctx_row,
                                const std::vector<int32_t>& ctx_len) {
  model_.forward_cached(batch, ctx_row, ctx_len);
}
std::vector<float> MoeScoring::logits() { return model_.logits_host(); }
std::vector<LayerRouting> MoeScoring::routing() { return model_.routing(); }

}  // namespace moe::eval
