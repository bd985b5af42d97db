// GradSync (grad_sync.h): buckets over the flat gradient groups, launched from the backward hook.
#include "train/grad_sync.h"

#include <algorithm>
#include <array>
#include <chrono>

namespace moe {

GradSync::GradSync(Communicator& comm, MoeModel& model, int64_t bucket_elements)
    : comm_(comm), model_(model) {
  if (comm_.size() <= 1) return;
  MOE_CHECK(bucket_elements > 0, "GradSync: bucket size must be positive, found {}",
            bucket_elements);
  const auto& groups = model_.param_groups();
  // Per group: the (offset, end, part) of each parameter, to give each bucket the lowest part
  // (the latest to finish in backward) among the parameters it overlaps.
  std::vector<std::vector<std::array<int64_t, 3>>> spans(groups.size());
  for (const Param& p : model_.params()) {
    if (!p.trainable || p.group < 0) continue;
    spans[static_cast<size_t>(p.group)].push_back(
        {p.group_offset, p.group_offset + p.value.numel(), model_.backward_part(p)});
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t n = groups[g].grad.numel();
    // From the end of the group: the layers at the end finish first in backward.
    for (int64_t end = n; end > 0; end -= bucket_elements) {
      const int64_t start = std::max<int64_t>(0, end - bucket_elements);
      int64_t part = model_.config().n_layers;
      for (const auto& s : spans[g]) {
        if (s[0] < end && s[1] > start) part = std::min(part, s[2]);
      }
      Bucket b;
      b.grad = groups[g].grad.slice_flat(start, {end - start});
      b.part = part;
      buckets_.push_back(std::move(b));
    }
  }
  // Launch order must be the same on every rank: highest part first, then group, then offset.
  std::stable_sort(buckets_.begin(), buckets_.end(),
                   [](const Bucket& a, const Bucket& b) { return a.part > b.part; });
}

GradSync::~GradSync() { model_.set_backward_hook(nullptr); }

void GradSync::begin_last_backward() {
  if (buckets_.empty()) return;
  model_.set_backward_hook([this](int64_t part) { launch_ready(part); });
}

void GradSync::launch_ready(int64_t part) {
  for (Bucket& b : buckets_) {
    if (b.request) {
      b.request->test();  // lets MPI progress the buckets in flight
    } else if (b.part >= part) {
      b.request = comm_.all_reduce_sum_async(b.grad);
    }
  }
}

void GradSync::finish() {
  if (buckets_.empty()) return;
  model_.set_backward_hook(nullptr);
  launch_ready(-1);
  auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) {
    b.request->wait();
    b.request.reset();
  }
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace moe
