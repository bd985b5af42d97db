// The Communicator operations on every rank of the launch (SingleRankCommunicator when run alone,
// MpiCommunicator under mpirun): sums, reduce-scatter, all-gather, all-to-all with uneven and zero
// counts, broadcast, host operations, split. Exact integer-valued data, so any number of ranks
// gives exact expected values.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "comm/process.h"

namespace moe {
namespace {

struct CommTest : ::testing::Test {
  std::unique_ptr<Backend> be = make_backend("cpu", 1);
  std::unique_ptr<Communicator> comm = make_world_communicator(*be);
  int rank = comm->rank(), size = comm->size();
};

TEST_F(CommTest, RankAndSizeComeFromTheLauncher) {
  EXPECT_EQ(size, process_info().size);
  EXPECT_EQ(rank, process_info().rank);
  EXPECT_EQ(comm->name(), size > 1 ? "mpi" : "single");
  EXPECT_GE(process_info().local_rank, 0);
  EXPECT_LT(process_info().local_rank, process_info().local_size);
  auto ranks = comm->all_gather_host(static_cast<uint64_t>(rank) * 7);
  ASSERT_EQ(static_cast<int>(ranks.size()), size);
  for (int r = 0; r < size; ++r) EXPECT_EQ(ranks[r], static_cast<uint64_t>(r) * 7);
}

TEST_F(CommTest, AllReduceSumsEveryDtype) {
  const int64_t n = 1000;
  std::vector<float> f(n);
  std::vector<double> d(n);
  std::vector<int32_t> i(n);
  for (int64_t k = 0; k < n; ++k) {
    f[k] = static_cast<float>(rank + k % 17);
    d[k] = 0.5 * rank - static_cast<double>(k);
    i[k] = rank * 1000 + static_cast<int32_t>(k);
  }
  Tensor tf = be->empty({n}, DType::kF32), td = be->empty({n}, DType::kF64);
  Tensor ti = be->empty({n}, DType::kI32);
  be->upload_vec(tf, f);
  be->upload_vec(td, d);
  be->upload_vec(ti, i);
  comm->all_reduce_sum(tf);
  comm->all_reduce_sum_async(td)->wait();
  auto req = comm->all_reduce_sum_async(ti);
  while (!req->test()) {
  }
  req->wait();
  const int rank_sum = size * (size - 1) / 2;
  auto rf = be->download_vec<float>(tf);
  auto rd = be->download_vec<double>(td);
  auto ri = be->download_vec<int32_t>(ti);
  for (int64_t k = 0; k < n; ++k) {
    ASSERT_EQ(rf[k], static_cast<float>(rank_sum + size * (k % 17))) << k;
    ASSERT_EQ(rd[k], 0.5 * rank_sum - static_cast<double>(size * k)) << k;
    ASSERT_EQ(ri[k], rank_sum * 1000 + size * static_cast<int32_t>(k)) << k;
  }
  Tensor bf = be->empty({4}, DType::kBF16);
  EXPECT_THROW(comm->all_reduce_sum(bf), Error);  // sums of bf16 are refused
}

TEST_F(CommTest, ReduceScatterAndAllGather) {
  const int64_t n = 5;
  std::vector<float> in(static_cast<size_t>(n * size));
  for (size_t k = 0; k < in.size(); ++k) in[k] = static_cast<float>(k + 100 * rank);
  Tensor tin = be->empty({n * size}, DType::kF32), tout = be->empty({n}, DType::kF32);
  be->upload_vec(tin, in);
  comm->reduce_scatter_sum(tout, tin);
  auto out = be->download_vec<float>(tout);
  for (int64_t k = 0; k < n; ++k) {
    EXPECT_EQ(out[k], static_cast<float>(size * (rank * n + k) + 100 * size * (size - 1) / 2));
  }
  Tensor gathered = be->empty({n * size}, DType::kF32);
  comm->all_gather(gathered, tout);
  auto g = be->download_vec<float>(gathered);
  for (int r = 0; r < size; ++r) {
    for (int64_t k = 0; k < n; ++k) {
      EXPECT_EQ(g[r * n + k], static_cast<float>(size * (r * n + k) + 100 * size * (size - 1) / 2));
    }
  }
  Tensor wrong = be->empty({n + 1}, DType::kF32);
  EXPECT_THROW(comm->reduce_scatter_sum(wrong, tin), Error);
}

// Rank s sends (s + d) % 3 elements to rank d (some zero); element j of that block is
// 1000 s + 100 d + j.
TEST_F(CommTest, AllToAllWithPerRankCounts) {
  std::vector<int64_t> send(size), recv(size);
  std::vector<int32_t> in;
  for (int d = 0; d < size; ++d) {
    send[d] = (rank + d) % 3;
    recv[d] = (d + rank) % 3;
    for (int64_t j = 0; j < send[d]; ++j) in.push_back(1000 * rank + 100 * d + static_cast<int32_t>(j));
  }
  int64_t n_recv = 0;
  for (auto c : recv) n_recv += c;
  Tensor tin = be->zeros({std::max<int64_t>(1, static_cast<int64_t>(in.size()))}, DType::kI32);
  if (!in.empty()) be->upload(tin, in.data(), in.size() * 4);
  Tensor tout = be->zeros({std::max<int64_t>(1, n_recv)}, DType::kI32);
  comm->all_to_all(tout, recv, tin, send);
  auto out = be->download_vec<int32_t>(tout);
  int64_t o = 0;
  for (int s = 0; s < size; ++s) {
    for (int64_t j = 0; j < recv[s]; ++j) {
      EXPECT_EQ(out[o++], 1000 * s + 100 * rank + static_cast<int32_t>(j)) << "from " << s;
    }
  }
}

TEST_F(CommTest, BroadcastFromLastRankAndHostOps) {
  const int root = size - 1;
  Tensor t = be->empty({3}, DType::kF64);
  be->upload_vec(t, std::vector<double>{rank + 0.25, 2.0 * rank, -1.0 * rank});
  comm->broadcast(t, root);
  EXPECT_EQ(be->download_vec<double>(t), (std::vector<double>{root + 0.25, 2.0 * root, -1.0 * root}));
  std::string bytes = rank == root ? std::string("hello from the root\0!", 21) : "x";
  comm->broadcast_host(bytes, root);
  EXPECT_EQ(bytes, std::string("hello from the root\0!", 21));
  std::vector<double> dv = {1.5, static_cast<double>(rank)};
  comm->all_reduce_sum_host(dv);
  EXPECT_EQ(dv, (std::vector<double>{1.5 * size, size * (size - 1) / 2.0}));
  std::vector<int64_t> iv = {int64_t{1} << 40, rank};
  comm->all_reduce_sum_host(iv);
  EXPECT_EQ(iv, (std::vector<int64_t>{size * (int64_t{1} << 40), size * (size - 1) / 2}));
  comm->barrier();
}

TEST_F(CommTest, SplitIntoEvenAndOddRanks) {
  auto sub = comm->split(rank % 2, rank);
  EXPECT_EQ(sub->rank(), rank / 2);
  EXPECT_EQ(sub->size(), (size - rank % 2 + 1) / 2);
  std::vector<int64_t> v = {rank};
  sub->all_reduce_sum_host(v);
  int64_t expect = 0;
  for (int r = rank % 2; r < size; r += 2) expect += r;
  EXPECT_EQ(v[0], expect);
}

}  // namespace
}  // namespace moe
