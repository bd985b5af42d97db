// GradSync: the gradient buckets cover every flat group exactly once, and most are launched from
// the backward hook while the backward pass is still running (the overlap), in an order that is
// the same on every rank. A recording communicator stands in for 2 ranks.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "support/tiny_models.h"
#include "train/grad_sync.h"

namespace moe {
namespace {

class RecordingComm final : public Communicator {
 public:
  struct Launch {
    const void* data;
    int64_t numel;
    bool during_backward;
    bool probe_untouched;  // layer 0's gradient still all zero: its backward has not run yet
  };
  bool in_backward = false;
  const float* probe = nullptr;
  int64_t probe_n = 0;
  std::vector<Launch> launches;
  int waits = 0;

  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string name() const override { return "recording"; }
  void all_reduce_sum(Tensor&) override { FAIL() << "GradSync must not block"; }
  std::unique_ptr<CommRequest> all_reduce_sum_async(Tensor& t) override {
    bool untouched = true;
    for (int64_t i = 0; i < probe_n; ++i) untouched = untouched && probe[i] == 0.0f;
    launches.push_back({t.data(), t.numel(), in_backward, untouched});
    struct Req : CommRequest {
      RecordingComm* c;
      explicit Req(RecordingComm* comm) : c(comm) {}
      void wait() override { ++c->waits; }
      bool test() override { return false; }
    };
    return std::make_unique<Req>(this);
  }
  void reduce_scatter_sum(Tensor&, const Tensor&) override {}
  void all_gather(Tensor&, const Tensor&) override {}
  void all_to_all(Tensor&, const std::vector<int64_t>&, const Tensor&,
                  const std::vector<int64_t>&) override {}
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
  void all_reduce_sum_host(std::vector<double>&) override {}
  void all_reduce_sum_host(std::vector<int64_t>&) override {}
  std::vector<uint64_t> all_gather_host(uint64_t v) override { return {v, v}; }
  void broadcast_host(std::string&, int) override {}
  std::unique_ptr<Communicator> split(int, int) override { return nullptr; }
};

TEST(GradSync, BucketsCoverTheGroupsAndOverlapTheBackwardPass) {
  auto be = make_backend("cpu", 1);
  ModelConfig mc = test::tiny_vanilla_config();
  MoeModel model(mc, test::all_losses(), *be, 2, 8);
  model.init_parameters(5);
  RecordingComm comm;
  for (Param& p : model.params()) {
    if (p.name.rfind("model.layers.0.", 0) == 0 && p.trainable) {
      comm.probe = p.grad.ptr<float>();
      comm.probe_n = p.grad.numel();
      break;
    }
  }
  ASSERT_NE(comm.probe, nullptr);
  GradSync sync(comm, model, /*bucket_elements=*/200);
  Batch b = test::random_batch(2, 8, mc.vocab_size, 9);
  model.zero_grad();
  model.forward(b, true);
  sync.begin_last_backward();
  comm.in_backward = true;
  model.backward(1.0f);
  comm.in_backward = false;
  sync.finish();

  ASSERT_EQ(static_cast<int64_t>(comm.launches.size()), sync.n_buckets());
  EXPECT_EQ(comm.waits, sync.n_buckets());
  // Every element of every group is in exactly one bucket.
  int64_t covered = 0, total = 0;
  for (const auto& l : comm.launches) covered += l.numel;
  for (const ParamGroup& g : model.param_groups()) total += g.grad.numel();
  EXPECT_EQ(covered, total);
  // Every bucket starts from the backward hook (none is left for finish()), highest layers
  // first: the embedding (tied with the head, at the start of the first group) is finished by
  // the last op of backward, so its bucket is the last one launched.
  for (const auto& l : comm.launches) EXPECT_TRUE(l.during_backward);
  const void* embedding = model.param_groups()[0].grad.data();
  EXPECT_EQ(comm.launches.back().data, embedding);
  EXPECT_NE(comm.launches.front().data, embedding);
  // The overlap: buckets went out before layer 0's backward had written its gradient.
  int64_t early = 0;
  for (const auto& l : comm.launches) early += l.probe_untouched;
  EXPECT_GE(early, 2) << "of " << comm.launches.size() << " buckets";
  // A second step launches the same buckets in the same order (the order every rank follows).
  auto first = comm.launches;
  comm.launches.clear();
  comm.probe_n = 0;
  model.forward(b, true);
  sync.begin_last_backward();
  model.backward(1.0f);
  sync.finish();
  ASSERT_EQ(comm.launches.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(comm.launches[i].data, first[i].data);
}

}  // namespace
}  // namespace moe
