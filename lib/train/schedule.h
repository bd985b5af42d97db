// The learning-rate schedule of a run: linear warmup from 0, then cosine, linear or constant
// decay to lr * min_lr_ratio at the last step.
#pragma once
#include <cstdint>

#include "config/config.h"

namespace moe {

// Learning rate of the update with 0-based index `step` (0 .. max_steps - 1):
//   step < warmup:  lr * (step + 1) / warmup        (rises from lr/warmup to lr; never 0, so
//                                                     no update is wasted)
//   after warmup:   p = (step - warmup) / max(1, max_steps - 1 - warmup) in [0, 1]
//     cosine:   min + (lr - min) * (1 + cos(pi p)) / 2
//     linear:   lr - (lr - min) * p
//     constant: lr
// with min = lr * min_lr_ratio, so the last update (p = 1) uses exactly min for cosine/linear.
// Steps past max_steps keep the final value.
double learning_rate(const TrainConfig& cfg, int64_t step);

}  // namespace moe
