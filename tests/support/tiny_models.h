// Tiny model configurations and batches shared by the whole-model tests (gradcheck,
// determinism, weights I/O).
#pragma once
#include <cstdint>

#include "config/config.h"
#include "model/model.h"

namespace moe::test {

// 3 MoE layers (two adjacent pairs for R_cp), E = 4, k = 2, tied embeddings.
ModelConfig tiny_vanilla_config();
// 1 dense + 2 MoE layers, E = 6, k = 3, 2 shared experts, norm_topk_prob, untied head,
// head_dim != d_model / n_heads.
ModelConfig tiny_deepseek_config();
// Every loss on, coefficients large enough that an error in any term shows in the gradient.
LossConfig all_losses(const std::string& balance = "aux");
// Seeded random ids in [0, vocab); a few targets are -1 (ignored).
Batch random_batch(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed);

}  // namespace moe::test
