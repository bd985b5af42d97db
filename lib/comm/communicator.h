// Communicator: the one interface the trainer talks to other ranks through. Three
// implementations: SingleRankCommunicator (one process, no MPI), MpiCommunicator (CPU tensors,
// lib/comm/mpi_communicator.cpp, built when CMake finds MPI) and the NCCL communicator (CUDA
// tensors, kernels/nccl_communicator.cu, bootstrapped over a host communicator).
//
// Conventions:
// - Tensor operations act on tensors of the communicator's device (host memory for MPI, device
//   memory for NCCL); sums are over f32, f64 or i32 tensors; gathers, all-to-all and broadcast
//   move any dtype. Every rank calls every collective in the same order with matching sizes.
// - Host operations (*_host) move small host values (loss values, statistics, hashes, flags)
//   and work on every implementation (NCCL delegates them to its host communicator).
// - Results are deterministic for a fixed number of ranks and identical on every rank.
// - Errors (a peer that died, a size mismatch) throw moe::Error; the caller aborts the job.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moe {

// A non-blocking collective in flight. wait() blocks until it completes (and the tensor may be
// read); test() lets the transport make progress and says whether it completed.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "single", "mpi", "nccl"

  // t = sum over ranks of t (in place).
  virtual void all_reduce_sum(Tensor& t) = 0;
  virtual std::unique_ptr<CommRequest> all_reduce_sum_async(Tensor& t) = 0;
  // in is [size() * n]; out [n] = sum over ranks of block rank() of their in.
  virtual void reduce_scatter_sum(Tensor& out, const Tensor& in) = 0;
  // in is [n]; out [size() * n] holds every rank's in, in rank order.
  virtual void all_gather(Tensor& out, const Tensor& in) = 0;
  // send_counts[r] elements of in (consecutive blocks in rank order) go to rank r;
  // recv_counts[r] elements from rank r land in out, consecutive in rank order. Counts are
  // elements, not bytes; a rank's send_counts[r] must equal rank r's recv_counts[rank()].
  virtual void all_to_all(Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                          const std::vector<int64_t>& send_counts) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  virtual void all_reduce_sum_host(std::vector<double>& v) = 0;
  virtual void all_reduce_sum_host(std::vector<int64_t>& v) = 0;
  virtual std::vector<uint64_t> all_gather_host(uint64_t value) = 0;  // one per rank
  virtual void broadcast_host(std::string& bytes, int root) = 0;

  // The ranks with the same color form a new communicator, ordered by key (MPI_Comm_split).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
};

class Backend;

// One rank: reductions are copies or nothing, all_to_all moves in to out.
class SingleRankCommunicator final : public Communicator {
 public:
  explicit SingleRankCommunicator(Backend& backend) : backend_(backend) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single"; }
  void all_reduce_sum(Tensor& t) override;
  std::unique_ptr<CommRequest> all_reduce_sum_async(Tensor& t) override;
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void all_to_all(Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                  const std::vector<int64_t>& send_counts) override;
  void broadcast(Tensor& t, int root) override;
  void barrier() override {}
  void all_reduce_sum_host(std::vector<double>&) override {}
  void all_reduce_sum_host(std::vector<int64_t>&) override {}
  std::vector<uint64_t> all_gather_host(uint64_t value) override { return {value}; }
  void broadcast_host(std::string&, int root) override;
  std::unique_ptr<Communicator> split(int color, int key) override;

 private:
  Backend& backend_;
};

// Shape checks shared by the implementations (errors name the operation).
void check_comm_tensor(const char* op, const Tensor& t, Device device);
void check_reduce_dtype(const char* op, const Tensor& t);

}  // namespace moe
