// NcclCommunicator: the Communicator over NCCL for CUDA tensors (lib/comm/communicator.h).
//
// Bootstrap: rank 0 creates the NCCL unique id, the host communicator (MPI) broadcasts it, every
// rank joins with ncclCommInitRank on the GPU of its backend. Host operations go to the host
// communicator.
//
// Streams: collectives run on a communication stream of their own. Each one first waits (event)
// for the work the backend's compute stream has enqueued so far, so it reads finished data; the
// compute stream then waits for the collective's completion event before anything enqueued later
// reads the result: at once for the blocking calls, at CommRequest::wait() for
// all_reduce_sum_async, so backward kernels keep running while a gradient bucket is reduced.
#include <nccl.h>

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "cuda_backend.h"
#include "nccl_entry.h"

namespace moe {
namespace {

#define MOE_NCCL_CHECK(expr)                                                                  \
  do {                                                                                        \
    ncclResult_t moe_nccl_rc = (expr);                                                        \
    MOE_CHECK(moe_nccl_rc == ncclSuccess, "NCCL {} failed: {}", #expr,                        \
              ncclGetErrorString(moe_nccl_rc));                                               \
  } while (0)

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::kF32: return ncclFloat32;
    case DType::kF64: return ncclFloat64;
    case DType::kI32: return ncclInt32;
    case DType::kBF16: return ncclBfloat16;
  }
  return ncclUint8;
}

class NcclRequest final : public CommRequest {
 public:
  NcclRequest(cudaEvent_t done, cudaStream_t compute) : done_(done), compute_(compute) {}
  ~NcclRequest() override { cudaEventDestroy(done_); }
  void wait() override { MOE_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0)); }
  bool test() override { return cudaEventQuery(done_) == cudaSuccess; }

 private:
  cudaEvent_t done_;
  cudaStream_t compute_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, CudaBackend& be, ncclComm_t comm)
      : host_(std::move(host)), be_(be), comm_(comm) {
    MOE_CUDA_CHECK(cudaSetDevice(be_.device_index()));
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    MOE_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  }
  ~NcclCommunicator() override {
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string name() const override { return "nccl"; }

  void all_reduce_sum(Tensor& t) override {
    all_reduce_sum_async(t)->wait();
  }
  std::unique_ptr<CommRequest> all_reduce_sum_async(Tensor& t) override {
    check("all_reduce_sum", t);
    check_reduce_dtype("all_reduce_sum", t);
    begin();
    MOE_NCCL_CHECK(ncclAllReduce(t.data(), t.data(), static_cast<size_t>(t.numel()),
                                 nccl_type(t.dtype()), ncclSum, comm_, stream_));
    return end();
  }
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override {
    check("reduce_scatter_sum", out);
    check("reduce_scatter_sum", in);
    check_reduce_dtype("reduce_scatter_sum", in);
    MOE_CHECK(in.dtype() == out.dtype() && in.numel() == out.numel() * size(),
              "reduce_scatter_sum: in has {} elements, expected {} ranks x {}", in.numel(), size(),
              out.numel());
    begin();
    MOE_NCCL_CHECK(ncclReduceScatter(in.data(), out.data(), static_cast<size_t>(out.numel()),
                                     nccl_type(in.dtype()), ncclSum, comm_, stream_));
    end()->wait();
  }
  void all_gather(Tensor& out, const Tensor& in) override {
    check("all_gather", out);
    check("all_gather", in);
    MOE_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * size(),
              "all_gather: out has {} elements, expected {} ranks x {}", out.numel(), size(),
              in.numel());
    begin();
    MOE_NCCL_CHECK(ncclAllGather(in.data(), out.data(), static_cast<size_t>(in.numel()),
                                 nccl_type(in.dtype()), comm_, stream_));
    end()->wait();
  }
  void all_to_all(Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                  const std::vector<int64_t>& send_counts) override {
    check("all_to_all", out);
    check("all_to_all", in);
    MOE_CHECK(in.dtype() == out.dtype(), "all_to_all: in is {}, out is {}",
              dtype_name(in.dtype()), dtype_name(out.dtype()));
    MOE_CHECK(static_cast<int>(recv_counts.size()) == size() &&
              static_cast<int>(send_counts.size()) == size(),
              "all_to_all: expected {} counts per direction, found {} and {}", size(),
              send_counts.size(), recv_counts.size());
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size(); ++r) so += send_counts[r], ro += recv_counts[r];
    MOE_CHECK(so <= in.numel() && ro <= out.numel(), "all_to_all: sends {} of [{}] and receives "
              "{} into [{}]", so, in.numel(), ro, out.numel());
    const size_t es = dtype_size(in.dtype());
    begin();
    MOE_NCCL_CHECK(ncclGroupStart());
    so = ro = 0;
    for (int r = 0; r < size(); ++r) {
      // Bytes, so a bf16 tensor moves as raw data.
      if (send_counts[r] > 0) {
        MOE_NCCL_CHECK(ncclSend(static_cast<const char*>(in.data()) + so * es,
                                static_cast<size_t>(send_counts[r]) * es, ncclUint8, r, comm_,
                                stream_));
      }
      if (recv_counts[r] > 0) {
        MOE_NCCL_CHECK(ncclRecv(static_cast<char*>(out.data()) + ro * es,
                                static_cast<size_t>(recv_counts[r]) * es, ncclUint8, r, comm_,
                                stream_));
      }
      so += send_counts[r];
      ro += recv_counts[r];
    }
    MOE_NCCL_CHECK(ncclGroupEnd());
    end()->wait();
  }
  void broadcast(Tensor& t, int root) override {
    check("broadcast", t);
    begin();
    MOE_NCCL_CHECK(ncclBroadcast(t.data(), t.data(), static_cast<size_t>(t.numel()),
                                 nccl_type(t.dtype()), root, comm_, stream_));
    end()->wait();
  }
  void barrier() override {
    be_.synchronize();
    host_->barrier();
  }

  void all_reduce_sum_host(std::vector<double>& v) override { host_->all_reduce_sum_host(v); }
  void all_reduce_sum_host(std::vector<int64_t>& v) override { host_->all_reduce_sum_host(v); }
  std::vector<uint64_t> all_gather_host(uint64_t value) override {
    return host_->all_gather_host(value);
  }
  void broadcast_host(std::string& bytes, int root) override {
    host_->broadcast_host(bytes, root);
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    std::unique_ptr<Communicator> host = host_->split(color, key);
    ncclComm_t sub = nullptr;
    MOE_NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr));
    return std::make_unique<NcclCommunicator>(std::move(host), be_, sub);
  }

 private:
  static void check(const char* op, const Tensor& t) { check_comm_tensor(op, t, Device::kCuda); }
  // The communication stream waits for what the compute stream has enqueued so far.
  void begin() {
    MOE_CUDA_CHECK(cudaEventRecord(ready_, be_.stream()));
    MOE_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  }
  std::unique_ptr<CommRequest> end() {
    cudaEvent_t done;
    MOE_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    MOE_CUDA_CHECK(cudaEventRecord(done, stream_));
    return std::make_unique<NcclRequest>(done, be_.stream());
  }

  std::unique_ptr<Communicator> host_;
  CudaBackend& be_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host,
                                                     Backend& cuda_backend) {
  auto* be = dynamic_cast<CudaBackend*>(&cuda_backend);
  MOE_CHECK(be != nullptr, "the NCCL communicator needs the CUDA backend, found {}",
            cuda_backend.name());
  MOE_CUDA_CHECK(cudaSetDevice(be->device_index()));
  ncclUniqueId id;
  std::string bytes;
  if (host->rank() == 0) {
    MOE_NCCL_CHECK(ncclGetUniqueId(&id));
    bytes.assign(reinterpret_cast<const char*>(&id), sizeof(id));
  }
  host->broadcast_host(bytes, 0);
  MOE_CHECK(bytes.size() == sizeof(id), "NCCL bootstrap: received a unique id of {} bytes, "
            "expected {}", bytes.size(), sizeof(id));
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(&id));
  ncclComm_t comm = nullptr;
  MOE_NCCL_CHECK(ncclCommInitRank(&comm, host->size(), id, host->rank()));
  return std::make_unique<NcclCommunicator>(std::move(host), *be, comm);
}

}  // namespace moe
