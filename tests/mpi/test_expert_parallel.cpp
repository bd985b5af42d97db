// Expert parallelism (MoeModel with an expert communicator, Trainer with train.expert_parallel):
//  - one forward/backward: every rank's losses and non-expert gradients equal the plain model's
//    on the same tokens, and each rank's expert gradients equal the plain model's summed over the
//    ranks (the owner sees every rank's rows), also when a whole shard receives no row at all;
//  - training: EP = world (and EP = 2 on 4 ranks: two replicas of each shard) equals one rank with
//    grad_accum = world for 5 steps, losses, grad norms and every parameter, with validation;
//  - checkpoints are the full model: an EP run's checkpoint loads strictly into a plain model
//    (moeeval) and resumes on 1 rank, on the same ranks without EP and with ZeRO-1, and with EP,
//    continuing the uninterrupted run's losses.
// Tolerance 1e-6 relative for gradients and losses, test::kParamTol for parameters after training
// (max |a - b| / max |b| per tensor): not bitwise, because an expert's
// weight gradient is one GEMM over all ranks' rows on its owner instead of one GEMM per rank
// summed by the all-reduce, and the gradient norm adds the shards' squared norms separately;
// every row's forward value is computed by the same kernel as without EP.
#include <filesystem>
#include <map>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "backend/backend.h"
#include "comm/process.h"
#include "io/safetensors.h"
#include "model/weights_io.h"
#include "mpi_test_util.h"

namespace moe {
namespace {

constexpr double kTol = 1e-6;

std::map<std::string, std::vector<float>> grads_by_name(MoeModel& m, Backend& be) {
  std::map<std::string, std::vector<float>> out;
  for (Param& p : m.params()) {
    if (p.trainable) out[p.name] = be.download_vec<float>(p.grad);
  }
  return out;
}

// One forward + backward of the plain and the expert-parallel model on this rank's tokens.
// zero_router: every token picks experts 0..k-1, so the shards past the first receive nothing.
void check_one_step(const std::string& arch, bool zero_router) {
  spdlog::set_level(spdlog::level::warn);
  auto be = make_backend("cpu", 1);
  auto comm = make_world_communicator(*be);
  const int world = comm->size();
  if (world < 2) GTEST_SKIP() << "expert parallelism needs at least 2 ranks (run under mpirun)";
  Config cfg = test::dp_config(arch, "unused");
  MoeModel plain(cfg.model, cfg.loss, *be, cfg.train.batch_size, cfg.train.seq_len);
  MoeModel ep(cfg.model, cfg.loss, *be, cfg.train.batch_size, cfg.train.seq_len, DType::kF32,
              false, comm.get());
  ASSERT_EQ(ep.expert_shards(), world);
  plain.init_parameters(11);
  ep.init_parameters(11);
  if (zero_router) {
    for (MoeModel* m : {&plain, &ep}) {
      for (Param& p : m->params()) {
        if (p.name.find("mlp.gate.weight") != std::string::npos) be->fill(p.value, 0.0);
      }
    }
  }
  // Each rank its own tokens.
  test::StreamData data(cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size,
                        1000 * static_cast<uint64_t>(comm->rank()));
  Batch batch;
  data.next_train_batch(batch);
  plain.forward(batch);
  plain.backward(0.5f);
  ep.forward(batch);
  ep.backward(0.5f);

  const LossValues a = ep.loss_values(), b = plain.loss_values();
  double worst_loss = 0;
  for (auto [x, y] : {std::pair{a.total, b.total}, {a.lm, b.lm}, {a.lb, b.lb}, {a.z, b.z},
                      {a.sp, b.sp}, {a.cp, b.cp}}) {
    worst_loss = std::max(worst_loss, test::rel_diff(x, y));
  }
  EXPECT_LE(worst_loss, kTol);
  if (zero_router) {
    const int64_t per_shard = cfg.model.n_experts / world;
    for (const LayerRouting& r : plain.routing()) {
      for (int32_t e : r.topk_idx) ASSERT_LT(e, per_shard) << "a shard past the first is used";
    }
  }

  // The plain model's expert gradients summed over the ranks = the owner's.
  auto g_ep = grads_by_name(ep, *be), g_plain = grads_by_name(plain, *be);
  double worst_expert = 0, worst_other = 0;
  int64_t n_expert = 0;
  for (Param& p : plain.params()) {
    if (!p.trainable) continue;
    const bool expert = p.name.find(".mlp.experts.") != std::string::npos;
    std::vector<float> want = g_plain[p.name];
    if (expert) {
      Tensor sum = be->empty(p.grad.shape(), DType::kF32);
      be->copy(sum, p.grad);
      comm->all_reduce_sum(sum);
      want = be->download_vec<float>(sum);
    }
    auto it = g_ep.find(p.name);
    if (it == g_ep.end()) {
      EXPECT_TRUE(expert && ep.is_other_shard_expert(p.name)) << p.name;
      continue;
    }
    const double d = test::rel_diff(it->second, want);
    EXPECT_LE(d, kTol) << p.name;
    (expert ? worst_expert : worst_other) = std::max(expert ? worst_expert : worst_other, d);
    n_expert += expert;
  }
  EXPECT_EQ(n_expert, 3 * (cfg.model.n_layers - cfg.model.dense_layers) *
                          (cfg.model.n_experts / world));
  // A test that cannot fail is no test: the expert gradients are not all zero.
  double norm = 0;
  for (auto& [name, g] : g_ep) {
    if (name.find(".mlp.experts." + std::to_string(ep.expert_shard() * cfg.model.n_experts /
                                                    world) + ".") == std::string::npos) {
      continue;
    }
    for (float x : g) norm += std::abs(x);
  }
  if (!zero_router || comm->rank() == 0) {
    EXPECT_GT(norm, 0.0) << "rank " << comm->rank();
  }
  if (comm->rank() == 0) {
    std::printf("[ EP grad %s%s ] %d ranks: max relative difference losses %.3g, expert grads "
                "%.3g, other grads %.3g\n", arch.c_str(), zero_router ? " empty shards" : "",
                world, worst_loss, worst_expert, worst_other);
  }
}

TEST(ExpertParallelModel, GradientsEqualThePlainModelVanilla) { check_one_step("vanilla", false); }
TEST(ExpertParallelModel, GradientsEqualThePlainModelDeepSeek) {
  check_one_step("deepseek", false);
}
TEST(ExpertParallelModel, ShardsWithoutTokens) { check_one_step("deepseek", true); }

struct TrainedRun {
  std::vector<LossValues> losses;
  std::vector<double> grad_norms;
  std::map<std::string, std::vector<float>> params;
  Trainer::ValidResult valid;
};

TrainedRun train(const Config& cfg, Backend& be, Communicator* comm, int steps,
          const std::string& resume = "", bool save = false) {
  test::StreamData data(cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size);
  TrainerOptions opts;
  opts.comm = comm;
  opts.resume_checkpoint = resume;
  Trainer trainer(cfg, be, data, opts);
  TrainedRun out;
  for (int s = 0; s < steps; ++s) {
    Trainer::StepResult r = trainer.train_step();
    out.losses.push_back(r.loss);
    out.grad_norms.push_back(r.grad_norm);
  }
  out.valid = trainer.validate();
  for (Param& p : trainer.model().params()) out.params[p.name] = be.download_vec<float>(p.value);
  if (save) trainer.save();
  return out;
}

// Largest relative difference of losses and grad norms (steps of `b` from `first`) and of the
// parameters `a` holds.
double compare(const TrainedRun& a, const TrainedRun& b, size_t first = 0) {
  double worst = 0;
  for (size_t s = 0; s < a.losses.size(); ++s) {
    const LossValues &x = a.losses[s], &y = b.losses[first + s];
    for (auto [u, v] : {std::pair{x.total, y.total}, {x.lm, y.lm}, {x.lb, y.lb}, {x.z, y.z},
                        {x.sp, y.sp}, {x.cp, y.cp}, {a.grad_norms[s], b.grad_norms[first + s]}}) {
      worst = std::max(worst, test::rel_diff(u, v));
    }
    EXPECT_EQ(x.n_tokens, y.n_tokens);
  }
  for (const auto& [name, v] : a.params) {
    auto it = b.params.find(name);
    EXPECT_TRUE(it != b.params.end()) << name;
    if (it == b.params.end()) continue;
    const double d = test::rel_diff(v, it->second);
    EXPECT_LE(d, test::kParamTol) << name;
    worst = std::max(worst, d);
  }
  return worst;
}

class ExpertParallelTraining : public ::testing::TestWithParam<std::string> {};

TEST_P(ExpertParallelTraining, EqualsOneRankAndCheckpointsAreTheFullModel) {
  spdlog::set_level(spdlog::level::warn);
  const std::string arch = GetParam();
  auto be = make_backend("cpu", 1);
  auto comm = make_world_communicator(*be);
  const int world = comm->size();
  if (world < 2) GTEST_SKIP() << "expert parallelism needs at least 2 ranks (run under mpirun)";
  const int steps = 5;
  const std::string tag = "ep-" + arch + "-r" + std::to_string(comm->rank());
  Config ref_cfg = test::dp_config(arch, test::make_temp_dir(tag + "-ref"));
  ref_cfg.train.grad_accum = world;
  ref_cfg.run.eval_batches = 3;  // 2 batches (StreamData): some ranks get none
  const TrainedRun ref = train(ref_cfg, *be, nullptr, steps);
  EXPECT_NE(ref.losses.front().total, ref.losses.back().total);

  std::vector<int64_t> degrees = {world};
  if (world == 4) degrees.push_back(2);  // two replicas of each shard
  for (int64_t ep : degrees) {
    Config cfg = test::dp_config(arch, test::shared_temp_dir(*comm, "ep-" + arch));
    cfg.train.expert_parallel = ep;
    cfg.run.eval_batches = 3;
    const TrainedRun run = train(cfg, *be, comm.get(), steps);
    const double worst = compare(run, ref);  // losses, grad norms and parameters
    EXPECT_LE(worst, test::kParamTol);
    const double dv = test::rel_diff(run.valid.loss, ref.valid.loss);
    EXPECT_LE(dv, kTol);
    EXPECT_EQ(run.valid.tokens, ref.valid.tokens);
    // This rank holds E / ep experts per MoE layer (3 tensors each).
    int64_t experts = 0;
    for (const auto& kv : run.params) experts += kv.first.find(".mlp.experts.") != std::string::npos;
    EXPECT_EQ(experts, 3 * (cfg.model.n_layers - cfg.model.dense_layers) *
                           (cfg.model.n_experts / ep));
    if (comm->rank() == 0) {
      std::printf("[ EP %s ] %d ranks, expert_parallel %lld vs 1 rank x grad_accum %d, %d steps: "
                  "max relative difference losses/grad norms/parameters %.3g, validation loss "
                  "%.3g\n", arch.c_str(), world, static_cast<long long>(ep), world, steps, worst,
                  dv);
    }
  }

  // Checkpoint after 3 EP steps; resume in other layouts for the last 2.
  Config cfg = test::dp_config(arch, test::shared_temp_dir(*comm, "ep-ckpt-" + arch));
  cfg.train.expert_parallel = world;
  train(cfg, *be, comm.get(), 3, "", /*save=*/true);
  const std::string ckpt = cfg.run.out_dir + "/checkpoints/step_00000003";
  comm->barrier();
  {
    // moeeval: a plain model loads it strictly (every expert, nothing unknown).
    MoeModel plain(cfg.model, cfg.loss, *be, 1, cfg.train.seq_len);
    EXPECT_NO_THROW(load_weights(plain, ckpt + "/model.safetensors"));
    SafeTensorsReader opt(ckpt + "/optimizer.safetensors");
    int64_t moments = 0;
    for (const Param& p : plain.params()) moments += p.trainable;
    EXPECT_EQ(static_cast<int64_t>(opt.names().size()), 2 * moments);
  }
  struct Layout {
    const char* what;
    bool alone;
    int64_t ep, zero, accum;
  };
  for (const Layout& l : {Layout{"1 rank", true, 1, 0, world}, Layout{"ZeRO-1", false, 1, 1, 1},
                          Layout{"expert parallel", false, world, 0, 1}}) {
    Config again = cfg;
    again.run.out_dir = l.alone ? test::make_temp_dir(tag + "-alone")
                                : test::shared_temp_dir(*comm, "ep-again-" + arch);
    again.train.expert_parallel = l.ep;
    again.train.zero = l.zero;
    again.train.grad_accum = l.accum;
    again.run.eval_batches = 3;
    const TrainedRun cont = train(again, *be, l.alone ? nullptr : comm.get(), 2, ckpt);
    const double worst = compare(cont, ref, 3);  // losses, grad norms and parameters
    EXPECT_LE(worst, test::kParamTol) << l.what;
    if (comm->rank() == 0) {
      std::printf("[ EP %s resume ] checkpoint of %d ranks x expert_parallel %d resumed on %s: "
                  "steps 4-5 and parameters vs the uninterrupted run %.3g\n", arch.c_str(), world,
                  world, l.what, worst);
    }
  }
  comm->barrier();
}

INSTANTIATE_TEST_SUITE_P(Archs, ExpertParallelTraining, ::testing::Values("vanilla", "deepseek"));

// Bad layouts are usage errors before step 1.
TEST(ExpertParallelChecks, LayoutErrors) {
  spdlog::set_level(spdlog::level::off);
  auto be = make_backend("cpu", 1);
  auto comm = make_world_communicator(*be);
  const int world = comm->size();
  Config cfg = test::dp_config("vanilla", test::shared_temp_dir(*comm, "ep-bad"));
  test::StreamData data(cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size);
  TrainerOptions opts;
  opts.comm = comm.get();
  cfg.train.expert_parallel = world + 1;  // does not divide the ranks
  EXPECT_THROW(Trainer(cfg, *be, data, opts), Error);
  if (world >= 2) {
    cfg.train.expert_parallel = world;
    cfg.train.zero = 1;
    EXPECT_THROW(Trainer(cfg, *be, data, opts), Error);
  }
  comm->barrier();
}

}  // namespace
}  // namespace moe
