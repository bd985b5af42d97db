// The NCCL communicator on GPU tensors: one rank per GPU (local rank = device). Run alone it
// tests a 1-rank NCCL communicator on one GPU; under mpirun -np 2 it needs 2 GPUs. Without
// enough GPUs (or a build without CUDA) every test reports SKIPPED, never passed.
#include <algorithm>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "comm/process.h"

namespace moe {
namespace {

struct NcclTest : ::testing::Test {
  void SetUp() override {
    const auto names = available_backends();
    if (std::find(names.begin(), names.end(), "cuda") == names.end()) {
      GTEST_SKIP() << "no CUDA device (or a build without CUDA): the NCCL communicator is not "
                      "tested here";
    }
    int gpus = 0;
    for (int d = 0; d < 16; ++d) {
      try {
        make_backend("cuda:" + std::to_string(d));
        ++gpus;
      } catch (const Error&) {
        break;
      }
    }
    if (gpus < process_info().local_size) {
      GTEST_SKIP() << process_info().local_size << " ranks on this node need as many GPUs, found "
                   << gpus;
    }
    be = make_backend("cuda:" + std::to_string(process_info().local_rank));
    comm = make_device_communicator(*be);  // NCCL even for one rank
  }
  std::unique_ptr<Backend> be;
  std::unique_ptr<Communicator> comm;
};

TEST_F(NcclTest, CollectivesOnGpuTensors) {
  const int rank = comm->rank(), size = comm->size();
  EXPECT_EQ(comm->name(), "nccl");
  const int64_t n = 1 << 16;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(rank + i % 13);
  Tensor t = be->empty({n}, DType::kF32);
  be->upload_vec(t, x);
  comm->all_reduce_sum_async(t)->wait();
  auto y = be->download_vec<float>(t);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(y[i], static_cast<float>(size * (size - 1) / 2 + size * (i % 13))) << i;
  }
  // reduce-scatter then all-gather gives the all-reduce back.
  Tensor in = be->empty({4 * size}, DType::kF32), part = be->empty({4}, DType::kF32);
  std::vector<float> v(4 * size);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i + rank);
  be->upload_vec(in, v);
  comm->reduce_scatter_sum(part, in);
  Tensor all = be->empty({4 * size}, DType::kF32);
  comm->all_gather(all, part);
  auto g = be->download_vec<float>(all);
  for (size_t i = 0; i < g.size(); ++i) {
    EXPECT_EQ(g[i], static_cast<float>(size * i + size * (size - 1) / 2));
  }
  // all-to-all: rank s sends s + d + 1 bf16 values to rank d.
  std::vector<int64_t> send(size), recv(size);
  std::vector<uint16_t> payload;
  for (int d = 0; d < size; ++d) {
    send[d] = rank + d + 1;
    recv[d] = d + rank + 1;
    for (int64_t j = 0; j < send[d]; ++j) payload.push_back(static_cast<uint16_t>(100 * rank + 10 * d + j));
  }
  int64_t nr = 0;
  for (auto c : recv) nr += c;
  Tensor sin = be->empty({static_cast<int64_t>(payload.size())}, DType::kBF16);
  Tensor sout = be->empty({nr}, DType::kBF16);
  be->upload(sin, payload.data(), payload.size() * 2);
  comm->all_to_all(sout, recv, sin, send);
  std::vector<uint16_t> got(nr);
  be->download(got.data(), sout, got.size() * 2);
  int64_t o = 0;
  for (int s = 0; s < size; ++s) {
    for (int64_t j = 0; j < recv[s]; ++j) EXPECT_EQ(got[o++], 100 * s + 10 * rank + j);
  }
  Tensor b = be->empty({3}, DType::kI32);
  be->upload_vec(b, std::vector<int32_t>{rank, 7, -rank});
  comm->broadcast(b, size - 1);
  EXPECT_EQ(be->download_vec<int32_t>(b), (std::vector<int32_t>{size - 1, 7, 1 - size}));
  comm->barrier();
}

}  // namespace
}  // namespace moe
