// Token-resident expert-parallel serving (infer/resident_ep.h), run alone and under mpirun with
// 2 and 4 ranks:
//  - every rank's logits equal the plain model's forward on that rank's batch (relative 1e-5),
//    for vanilla and DeepSeekMoE (a dense layer, shared experts, a non-zero balancing bias),
//    under round-robin, contiguous and a random balanced placement, with batches of different
//    shapes on different ranks and, in one pass, a rank with no batch at all;
//  - the hops and cross-device hops it counts equal routing::count_hops on the trace of the same
//    tokens routed by the plain model (the first MoE layer, which starts from the home rank, is
//    checked against a count of its own), and the expert bytes it counts are what those crossings
//    and the row counts cost;
//  - a pass with every rank empty returns false.
#include <random>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "backend/backend.h"
#include "comm/process.h"
#include "infer/resident_ep.h"
#include "mpi_test_util.h"
#include "routing/trace.h"

namespace moe {
namespace {

constexpr double kLogitTol = 1e-5;

// Rank q's batch in pass `round` (the same on every rank, so each can recount every rank's
// routing): shapes differ by rank; in round 1 the last of several ranks has nothing to score.
Batch batch_of(int q, int P, int round, int64_t vocab) {
  Batch b;
  if (round == 1 && P > 1 && q == P - 1) return b;
  b.batch = 1 + (q + round) % 2;
  b.seq = 8 - (q % 4);
  std::mt19937 gen(static_cast<uint32_t>(1000 * round + q));
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  for (int64_t i = 0; i < b.batch * b.seq; ++i) b.inputs.push_back(id(gen));
  b.targets.assign(b.inputs.size(), -1);
  return b;
}

routing::Placement random_placement(int64_t M, int64_t E, int64_t P, uint32_t seed) {
  routing::Placement p;
  p.kind = "random";
  p.n_layers = M;
  p.n_experts = E;
  p.devices = P;
  std::mt19937 gen(seed);
  for (int64_t m = 0; m < M; ++m) {
    std::vector<int32_t> experts(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) experts[e] = static_cast<int32_t>(e);
    std::shuffle(experts.begin(), experts.end(), gen);
    std::vector<int32_t> dev(static_cast<size_t>(E));
    for (int64_t i = 0; i < E; ++i) dev[experts[i]] = static_cast<int32_t>(i / (E / P));
    p.device.insert(p.device.end(), dev.begin(), dev.end());
  }
  return p;
}

void check_arch(const std::string& arch) {
  spdlog::set_level(spdlog::level::warn);
  auto be = make_backend("cpu", 1);
  auto comm = make_world_communicator(*be);
  const int P = comm->size(), rank = comm->rank();
  Config cfg = test::dp_config(arch, "unused");
  const ModelConfig& c = cfg.model;
  if (c.n_experts % P != 0) GTEST_SKIP() << P << " ranks do not divide " << c.n_experts;
  MoeModel plain(c, cfg.loss, *be, 2, c.max_seq_len);
  plain.init_parameters(7);
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> small(-0.05f, 0.05f);
  for (Param& p : plain.params()) {  // a balancing bias that changes the top-k
    if (p.name.find("e_score_correction_bias") == std::string::npos) continue;
    std::vector<float> v(static_cast<size_t>(p.value.numel()));
    for (float& x : v) x = small(gen);
    be->upload_vec(p.value, v);
  }
  const int64_t M = c.n_layers - c.dense_layers, E = c.n_experts;
  std::vector<routing::Placement> placements = {
      routing::round_robin_placement(M, E, P), routing::contiguous_placement(M, E, P),
      random_placement(M, E, P, 11)};
  for (const routing::Placement& place : placements) {
    SCOPED_TRACE(arch + " " + place.kind);
    infer::ResidentExpertParallel ep(plain, *comm, place);
    routing::RoutingTrace trace;
    int64_t first_hops = 0, first_crossing = 0;
    for (int round = 0; round < 3; ++round) {
      const Batch mine = batch_of(rank, P, round, c.vocab_size);
      ASSERT_TRUE(ep.forward(mine));
      if (mine.batch > 0) {
        plain.forward(mine, /*need_grad=*/false);
        const std::vector<float> want = plain.logits_host();
        EXPECT_LE(test::rel_diff(ep.logits(), want), kLogitTol) << "round " << round;
      }
      // Every rank's tokens as the plain model routes them.
      for (int q = 0; q < P; ++q) {
        const Batch b = batch_of(q, P, round, c.vocab_size);
        if (b.batch == 0) continue;
        plain.forward(b, false);
        const std::vector<LayerRouting> r = plain.routing();
        for (int64_t row = 0; row < b.batch; ++row) trace.append_sequence(r, row * b.seq, b.seq);
        for (int64_t t = 0; t < b.batch * b.seq; ++t) {
          for (int64_t s = 0; s < c.top_k; ++s) {
            first_hops++;
            first_crossing += place.at(0, r[0].topk_idx[t * c.top_k + s]) != q ? 1 : 0;
          }
        }
      }
    }
    // Every rank empty: nothing runs.
    EXPECT_FALSE(ep.forward(Batch{}));

    const infer::ResidentEpStats& s = ep.stats();
    std::vector<int64_t> got = {s.hops,         s.crossing, s.first_hops, s.first_crossing,
                                s.expert_bytes, s.forwards, s.expert_rows};
    comm->all_reduce_sum_host(got);
    const routing::HopStats want = routing::count_hops(trace, place, c.d_model, 4);
    EXPECT_EQ(got[0], want.hops);
    EXPECT_EQ(got[1], want.crossing);
    EXPECT_EQ(got[2], first_hops);
    EXPECT_EQ(got[6], got[0] + got[2]) << "every (token, slot) row is computed once, somewhere";
    EXPECT_EQ(got[3], first_crossing);
    if (P > 1) {
      EXPECT_GT(got[1] + got[3], 0) << "no row crossed ranks: the test shows nothing";
    }
    // Rows out and back (d f32 values each way) per crossing, plus E/P row counts per other
    // rank, per rank, MoE layer and pass.
    const int64_t passes = got[5] / P;
    EXPECT_EQ(passes, 3);
    EXPECT_EQ(got[4], 2 * c.d_model * 4 * (got[1] + got[3]) +
                          int64_t{P} * (P - 1) * (E / P) * 4 * M * passes);
  }
}

TEST(ResidentExpertParallel, VanillaMatchesThePlainModelAndCountsHops) { check_arch("vanilla"); }
TEST(ResidentExpertParallel, DeepseekMatchesThePlainModelAndCountsHops) { check_arch("deepseek"); }

// A placement for another rank count or another model is a usage error naming both.
TEST(ResidentExpertParallel, RejectsAPlacementOfAnotherShape) {
  auto be = make_backend("cpu", 1);
  auto comm = make_world_communicator(*be);
  Config cfg = test::dp_config("vanilla", "unused");
  MoeModel m(cfg.model, cfg.loss, *be, 2, cfg.model.max_seq_len);
  m.init_parameters(1);
  const int64_t M = cfg.model.n_layers - cfg.model.dense_layers;
  const int64_t other = comm->size() == 1 ? 2 : 1;
  try {
    infer::ResidentExpertParallel ep(
        m, *comm, routing::round_robin_placement(M, cfg.model.n_experts, other));
    FAIL() << "a placement for " << other << " devices was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), 2);
    EXPECT_NE(std::string(e.what()).find("ranks"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moe
