// gather_expert_shards (expert_checkpoint.h): one all-gather per flat expert group and tensor
// (values, m, v); every shard has the same layout, so shard q's copy of a local parameter sits at
// q * numel + group_offset.
#include "train/expert_checkpoint.h"

namespace moe {

CheckpointExtras gather_expert_shards(MoeModel& model, AdamW& optimizer, Communicator& experts,
                                      bool keep) {
  CheckpointExtras out;
  if (experts.size() <= 1) return out;
  Backend& be = model.backend();
  const auto& groups = model.param_groups();
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    if (!groups[gi].experts) continue;
    const int64_t n = groups[gi].value.numel();
    const auto [m, v] = optimizer.group_moments(gi);
    Tensor all = be.empty({n * experts.size()}, DType::kF32);
    std::vector<float> gathered[3];
    const Tensor* parts[3] = {&groups[gi].value, &m, &v};
    for (int t = 0; t < 3; ++t) {
      experts.all_gather(all, *parts[t]);
      if (keep) gathered[t] = be.download_vec<float>(all);
    }
    if (!keep) continue;
    for (const Param& p : model.params()) {
      if (p.group != static_cast<int64_t>(gi)) continue;
      for (int q = 0; q < experts.size(); ++q) {
        if (q == experts.rank()) continue;
        const std::string name = model.expert_name_on_shard(p.name, q);
        const auto begin = static_cast<size_t>(q * n + p.group_offset);
        auto slice = [&](const std::vector<float>& all_values) {
          return std::vector<float>(all_values.begin() + static_cast<std::ptrdiff_t>(begin),
                                    all_values.begin() +
                                        static_cast<std::ptrdiff_t>(begin + p.value.numel()));
        };
        out.weights.push_back({name, p.value.shape(), slice(gathered[0])});
        out.optimizer.push_back({"exp_avg." + name, p.value.shape(), slice(gathered[1])});
        out.optimizer.push_back({"exp_avg_sq." + name, p.value.shape(), slice(gathered[2])});
      }
    }
  }
  return out;
}

}  // namespace moe
