// Expert-parallel checkpoints: a rank holds one shard of the routed experts, but a checkpoint is
// the full model (docs/distributed.md), so before rank 0 writes, the ranks of each
// expert-parallel group gather their shards' experts and AdamW moments.
#pragma once
#include "checkpoint/checkpoint.h"
#include "comm/communicator.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace moe {

// A collective over `experts` (the model's expert-parallel group; every rank of it calls it).
// With keep, returns the other shards' routed-expert weights and moments ("exp_avg." and
// "exp_avg_sq." + name) under their global names; without, an empty result. One rank: empty.
CheckpointExtras gather_expert_shards(MoeModel& model, AdamW& optimizer, Communicator& experts,
                                      bool keep);

}  // namespace moe
