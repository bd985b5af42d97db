// Data parallel (trainer + MPI): on N ranks with grad_accum A, five steps equal one rank with
// grad_accum N x A over the same global batches. Every rank also trains the one-rank reference
// itself (a SingleRankCommunicator), so the comparison needs no files. The ranks must stay
// bitwise identical to each other, and only rank 0 writes metrics.
#include <filesystem>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "comm/process.h"
#include "mpi_test_util.h"
#include "support/paths.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

struct Trained {
  std::vector<LossValues> losses;
  std::vector<double> grad_norms;
  std::vector<std::vector<float>> params;  // every Param (trainable or not), in order
  std::vector<std::string> names;
};

// Trains `steps` updates (after resuming `resume`, when given); save: write a checkpoint after.
Trained train_steps(const Config& cfg, Backend& be, Communicator* comm, int steps,
                    const std::string& resume = "", bool save = false,
                    int64_t* state_numel = nullptr) {
  test::StreamData data(cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size);
  TrainerOptions opts;
  opts.comm = comm;
  opts.resume_checkpoint = resume;
  Trainer trainer(cfg, be, data, opts);
  if (state_numel) *state_numel = trainer.optimizer().state_numel();
  Trained out;
  for (int s = 0; s < steps; ++s) {
    Trainer::StepResult r = trainer.train_step();
    out.losses.push_back(r.loss);
    out.grad_norms.push_back(r.grad_norm);
  }
  for (Param& p : trainer.model().params()) {
    out.params.push_back(be.download_vec<float>(p.value));
    out.names.push_back(p.name);
  }
  if (save) trainer.save();
  return out;
}

// Largest relative difference (per tensor, as rel_diff) between two checkpoints' optimizer
// states; every tensor of `a` must be in `b`.
double optimizer_diff(const std::string& a, const std::string& b) {
  SafeTensorsReader ra(a + "/optimizer.safetensors"), rb(b + "/optimizer.safetensors");
  double worst = 0;
  for (const std::string& name : ra.names()) {
    EXPECT_TRUE(rb.has(name)) << name;
    if (!rb.has(name)) continue;
    worst = std::max(worst, test::rel_diff(ra.to_f32(name), rb.to_f32(name)));
  }
  EXPECT_FALSE(ra.names().empty());
  return worst;
}

struct Case {
  std::string arch;
  int64_t dp_accum;
};

class DataParallel : public ::testing::TestWithParam<Case> {};

TEST_P(DataParallel, EqualsOneRankWithGradAccum) {
  spdlog::set_level(spdlog::level::warn);
  const Case c = GetParam();
  auto be = make_backend("cpu", 1);
  auto comm = make_world_communicator(*be);
  const int world = comm->size();
  const std::string tag = "dp-" + c.arch + "-r" + std::to_string(comm->rank());

  Config ref_cfg = test::dp_config(c.arch, test::make_temp_dir(tag + "-ref"));
  ref_cfg.train.grad_accum = world * c.dp_accum;
  // The ranks compare resolved configs: the run directory must be the same string on all.
  Config dp_cfg = test::dp_config(c.arch, test::shared_temp_dir(*comm, "dp-" + c.arch));
  dp_cfg.train.grad_accum = c.dp_accum;

  const int steps = 5;
  Trained ref = train_steps(ref_cfg, *be, nullptr, steps);
  Trained dp = train_steps(dp_cfg, *be, comm.get(), steps);

  double worst_loss = 0, worst_param = 0;
  for (int s = 0; s < steps; ++s) {
    for (auto [a, b] : {std::pair{dp.losses[s].total, ref.losses[s].total},
                        {dp.losses[s].lm, ref.losses[s].lm}, {dp.losses[s].lb, ref.losses[s].lb},
                        {dp.losses[s].z, ref.losses[s].z}, {dp.losses[s].sp, ref.losses[s].sp},
                        {dp.losses[s].cp, ref.losses[s].cp}, {dp.grad_norms[s], ref.grad_norms[s]}}) {
      worst_loss = std::max(worst_loss, test::rel_diff(a, b));
    }
    EXPECT_EQ(dp.losses[s].n_tokens, ref.losses[s].n_tokens) << "step " << s + 1;
  }
  for (size_t i = 0; i < ref.params.size(); ++i) {
    const double d = test::rel_diff(dp.params[i], ref.params[i]);
    EXPECT_LE(d, test::kParamTol) << ref.names[i];
    worst_param = std::max(worst_param, d);
  }
  EXPECT_LE(worst_loss, 1e-6);
  // The update moved the model (a test that cannot fail is no test): step 5 differs from 1.
  EXPECT_NE(ref.losses[0].total, ref.losses[steps - 1].total);
  if (comm->rank() == 0) {
    std::printf("[ DP %s ] %d ranks x grad_accum %lld vs 1 rank x grad_accum %lld, %d steps: max "
                "relative difference losses/grad norm %.3g, parameters %.3g\n", c.arch.c_str(),
                world, static_cast<long long>(c.dp_accum),
                static_cast<long long>(world * c.dp_accum), steps, worst_loss, worst_param);
  }

  // Every rank holds bitwise the same parameters.
  uint64_t h = 0;
  for (const auto& p : dp.params) h = h * 31 + hash_bytes(p.data(), p.size() * 4);
  for (uint64_t other : comm->all_gather_host(h)) EXPECT_EQ(other, h);
  comm->barrier();
}

INSTANTIATE_TEST_SUITE_P(Archs, DataParallel,
                         ::testing::Values(Case{"vanilla", 1}, Case{"deepseek", 1},
                                           Case{"vanilla", 2}),
                         [](const auto& info) {
                           return info.param.arch + "_accum" + std::to_string(info.param.dp_accum);
                         });

// ZeRO-1 equals plain data parallelism; the optimizer state is split (sizes); its checkpoint
// holds the full moments (equal to plain DP's) and loads back shard by shard.
TEST(Zero1, EqualsPlainDataParallelAndSplitsTheState) {
  spdlog::set_level(spdlog::level::warn);
  auto be = make_backend("cpu", 1);
  auto comm = make_world_communicator(*be);
  const int world = comm->size();
  const int steps = 5;
  Config plain = test::dp_config("deepseek", test::shared_temp_dir(*comm, "zero-plain"));
  Config zero = test::dp_config("deepseek", test::shared_temp_dir(*comm, "zero-1"));
  zero.train.zero = 1;
  int64_t plain_state = 0, zero_state = 0;
  Trained a = train_steps(plain, *be, comm.get(), steps, "", /*save=*/true, &plain_state);
  Trained b = train_steps(zero, *be, comm.get(), steps, "", /*save=*/true, &zero_state);
  double worst = 0;
  for (int s = 0; s < steps; ++s) {
    worst = std::max({worst, test::rel_diff(b.losses[s].total, a.losses[s].total),
                      test::rel_diff(b.grad_norms[s], a.grad_norms[s])});
  }
  for (size_t i = 0; i < a.params.size(); ++i) {
    const double d = test::rel_diff(b.params[i], a.params[i]);
    EXPECT_LE(d, test::kParamTol) << a.names[i];
    worst = std::max(worst, d);
  }
  EXPECT_LE(worst, test::kParamTol);
  // Sizes: plain DP holds m and v of every trainable parameter; ZeRO-1 a 1/world shard of each
  // flat group (rounded up).
  int64_t trainable = 0;
  {
    MoeModel m(zero.model, zero.loss, *be, 1, zero.train.seq_len);
    int64_t expect = 0;
    for (const ParamGroup& g : m.param_groups()) {
      trainable += g.value.numel();
      expect += 2 * ((g.value.numel() + world - 1) / world);
    }
    EXPECT_EQ(plain_state, 2 * trainable);
    EXPECT_EQ(zero_state, world > 1 ? expect : 2 * trainable);
  }
  const std::string ckpt_a = plain.run.out_dir + "/checkpoints/step_00000005";
  const std::string ckpt_b = zero.run.out_dir + "/checkpoints/step_00000005";
  if (comm->rank() == 0) {
    const double od = optimizer_diff(ckpt_b, ckpt_a);
    EXPECT_LE(od, 1e-6);
    std::printf("[ ZeRO-1 ] %d ranks, %d steps: max relative difference to plain DP %.3g "
                "(losses, grad norms, parameters), optimizer checkpoint %.3g; optimizer state "
                "per rank %lld elements vs %lld\n", world, steps, worst, od,
                static_cast<long long>(zero_state), static_cast<long long>(plain_state));
  }
  // Resuming the ZeRO-1 checkpoint (each rank loads its shard) and saving again at the same
  // step reproduces the checkpoint exactly.
  Config again = zero;
  again.run.out_dir = test::shared_temp_dir(*comm, "zero-again");
  Trained c = train_steps(again, *be, comm.get(), 0, ckpt_b, /*save=*/true);
  if (comm->rank() == 0) {
    EXPECT_EQ(optimizer_diff(again.run.out_dir + "/checkpoints/step_00000005", ckpt_b), 0.0);
  }
  comm->barrier();
}

// Ranks that read different data disagree on the data hash the trainer compares before step 1
// (tests/cli/train_mpi.sh launches mismatched configs through moetrain and sees the error).
TEST(DataParallelChecks, DifferentDataGivesDifferentHashes) {
  auto be = make_backend("cpu", 1);
  auto comm = make_world_communicator(*be);
  test::StreamData same(2, 8, 61), other(2, 8, 61, /*salt=*/12345);
  EXPECT_NE(same.content_hash(), other.content_hash());
  const bool last = comm->size() > 1 && comm->rank() == comm->size() - 1;
  auto hashes = comm->all_gather_host(last ? other.content_hash() : same.content_hash());
  EXPECT_EQ(hashes.front(), same.content_hash());
  EXPECT_EQ(hashes.back() != hashes.front(), comm->size() > 1);
}

}  // namespace
}  // namespace moe
