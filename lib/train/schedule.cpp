// Learning-rate schedule (see schedule.h for the formula).
#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace moe {

double learning_rate(const TrainConfig& cfg, int64_t step) {
  const double peak = cfg.lr;
  const double floor_lr = cfg.lr * cfg.min_lr_ratio;
  if (step < cfg.warmup_steps) {
    return peak * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  }
  if (cfg.schedule == "constant") return peak;
  const int64_t span = std::max<int64_t>(1, cfg.max_steps - 1 - cfg.warmup_steps);
  const double p =
      std::clamp(static_cast<double>(step - cfg.warmup_steps) / static_cast<double>(span), 0.0, 1.0);
  if (cfg.schedule == "linear") return peak - (peak - floor_lr) * p;
  constexpr double kPi = 3.14159265358979323846;
  return floor_lr + (peak - floor_lr) * 0.5 * (1.0 + std::cos(kPi * p));
}

}  // namespace moe
