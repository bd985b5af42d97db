// Data-parallel gradient averaging: the flat parameter groups (MoeModel::param_groups) are cut
// into buckets of at most `bucket_elements`; each bucket is summed over the ranks with a
// non-blocking all-reduce as soon as the backward pass has finished every parameter it covers
// (MoeModel::set_backward_hook), so communication overlaps the rest of the backward pass. The
// average comes from the loss scale (the trainer scales each rank's backward by
// 1 / (grad_accum * world)), so the sum is the mean gradient of the global batch.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "model/model.h"

namespace moe {

class GradSync {
 public:
  // With one rank nothing is ever sent.
  GradSync(Communicator& comm, MoeModel& model, int64_t bucket_elements);
  ~GradSync();
  // Arms the hook: the next backward() launches buckets as their parameters finish.
  void begin_last_backward();
  // Launches what is left, waits for every bucket, disarms the hook.
  void finish();
  int64_t n_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Seconds spent in finish() waiting for communication that the backward did not hide.
  double wait_seconds() const { return wait_seconds_; }

 private:
  struct Bucket {
    Tensor grad;        // a view into one group's flat gradient
    int64_t part = 0;   // launch once backward reports this part (or a lower one) done
    std::unique_ptr<CommRequest> request;
  };
  void launch_ready(int64_t part);

  Communicator& comm_;
  MoeModel& model_;
  std::vector<Bucket> buckets_;
  double wait_seconds_ = 0;
};

}  // namespace moe
