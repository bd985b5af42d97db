// AdamW over a model's parameters (decoupled weight decay, none on norm gains), with clipping by
// the global gradient norm. The moment estimates m and v live on the backend's device next to
// the parameters, in f32; they are saved to and restored from optimizer.safetensors as
// "exp_avg.<param name>" and "exp_avg_sq.<param name>" (PyTorch's names).
#pragma once
#include <string>
#include <vector>

#include "backend/backend.h"
#include "checkpoint/checkpoint.h"
#include "comm/communicator.h"
#include "config/config.h"
#include "model/model.h"

namespace moe {

class SafeTensorsReader;
class SafeTensorsWriter;

class AdamW final : public OptimizerStateIO {
 public:
  // Allocates zeroed m and v for every trainable parameter. `params` must outlive the optimizer.
  // With `groups` (MoeModel::param_groups()), the parameters that live in a group are updated,
  // and their gradient norm taken, one group at a time (m and v flat per group as well); any
  // other trainable parameter one tensor at a time. The numbers are the same either way except
  // for the summation order of the gradient norm.
  //
  // ZeRO-1 (`zero` = the data-parallel communicator, with groups): each group's m and v hold only
  // this rank's shard, elements [rank * S, (rank + 1) * S) of the group with S = ceil(numel /
  // world). step() then reduce-scatters the gradients (summing them over the ranks: call it with
  // unreduced gradients), updates the local shard of the parameters, and all-gathers them, so
  // every rank ends with the same parameters as plain data parallelism; grad_norm() is the
  // global norm of the summed gradient. save() writes the full moments (gather_state() first,
  // on every rank) and load() keeps this rank's shard, so checkpoints do not depend on the
  // number of ranks.
  AdamW(Backend& backend, std::vector<Param>& params, const TrainConfig& cfg,
        const std::vector<ParamGroup>& groups = {}, Communicator* zero = nullptr);

  bool sharded() const { return zero_ != nullptr; }
  // ZeRO-1: reduce-scatters the gradients into this rank's shard (call once per step, on every
  // rank, before grad_norm() and step()). No-op without sharding.
  void reduce_scatter_grads();
  // ZeRO-1: gathers the full moments from every rank (a collective) for the next save().
  void gather_state();
  // Elements of optimizer state (m and v) this rank holds.
  int64_t state_numel() const;

  // sqrt(sum over trainable grads of grad^2), in a fixed order.
  double grad_norm();
  // The factor the gradients are multiplied by before the update: min(1, clip / (norm + 1e-6)),
  // or 1 when clipping is off (grad_clip = 0).
  static float clip_scale(double grad_norm, double grad_clip);
  // One update with 1-based step number `step` (bias correction) and learning rate lr.
  void step(int64_t step, double lr, float grad_scale);

  void save(SafeTensorsWriter& out) override;
  // Restores m and v; a moment missing or of the wrong shape is an error naming it and `origin`.
  void load(const SafeTensorsReader& in) override;

 private:
  struct State {
    Param* param;
    Tensor m, v;  // views into the group's moments when the parameter is in a group
  };
  struct GroupState {
    ParamGroup group;
    Tensor m, v;
    // ZeRO-1: this rank's shard [begin, begin + len) of the group, S = shard (padded) length;
    // grad_shard [S] receives the reduce-scatter.
    int64_t begin = 0, len = 0, shard = 0;
    Tensor grad_shard;
    std::vector<float> full_m, full_v;  // filled by gather_state for save()
  };
  void zero_step(GroupState& g, AdamWParams hp);
  void gather_full(GroupState& g, const Tensor& shard, std::vector<float>& out);
  Backend& backend_;
  TrainConfig cfg_;
  std::vector<State> states_;          // every trainable parameter (save/load by name)
  std::vector<GroupState> groups_;     // whole-group updates
  std::vector<State*> ungrouped_;      // trainable parameters in no group
  Tensor norm_sq_;  // [1] f32 scratch for global_norm_sq
  Communicator* zero_ = nullptr;
  Tensor padded_;   // ZeRO-1: [world * max S] scratch for reduce-scatter input / all-gather output
  Tensor staged_;   // ZeRO-1: [max S] this rank's parameter shard, padded
};

}  // namespace moe
