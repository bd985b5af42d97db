// SingleRankCommunicator (communicator.h) and the checks every implementation shares.
#include "backend/backend.h"
#include "comm/communicator.h"
#include "core/error.h"

namespace moe {
namespace {

class DoneRequest final : public CommRequest {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

void check_comm_tensor(const char* op, const Tensor& t, Device device) {
  MOE_CHECK(t.defined(), "{}: the tensor is undefined", op);
  MOE_CHECK(t.device() == device, "{}: the tensor lives on {}, this communicator moves {} "
            "tensors", op, t.device() == Device::kCpu ? "the CPU" : "a GPU",
            device == Device::kCpu ? "CPU" : "GPU");
}

void check_reduce_dtype(const char* op, const Tensor& t) {
  MOE_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kF64 || t.dtype() == DType::kI32,
            "{}: sums are over f32, f64 or i32 tensors, found {}", op, dtype_name(t.dtype()));
}

void SingleRankCommunicator::all_reduce_sum(Tensor& t) {
  check_reduce_dtype("all_reduce_sum", t);
}

std::unique_ptr<CommRequest> SingleRankCommunicator::all_reduce_sum_async(Tensor& t) {
  check_reduce_dtype("all_reduce_sum_async", t);
  return std::make_unique<DoneRequest>();
}

void SingleRankCommunicator::reduce_scatter_sum(Tensor& out, const Tensor& in) {
  check_reduce_dtype("reduce_scatter_sum", in);
  MOE_CHECK(out.numel() == in.numel(), "reduce_scatter_sum: out has {} elements, expected {}",
            out.numel(), in.numel());
  backend_.copy(out, in);
}

void SingleRankCommunicator::all_gather(Tensor& out, const Tensor& in) {
  MOE_CHECK(out.numel() == in.numel(), "all_gather: out has {} elements, expected {}",
            out.numel(), in.numel());
  backend_.copy(out, in);
}

void SingleRankCommunicator::all_to_all(Tensor& out, const std::vector<int64_t>& recv_counts,
                                        const Tensor& in,
                                        const std::vector<int64_t>& send_counts) {
  MOE_CHECK(recv_counts.size() == 1 && send_counts.size() == 1 &&
            recv_counts[0] == send_counts[0], "all_to_all: one rank sends {} and receives {} "
            "elements", send_counts.empty() ? -1 : send_counts[0],
            recv_counts.empty() ? -1 : recv_counts[0]);
  MOE_CHECK(send_counts[0] <= in.numel() && recv_counts[0] <= out.numel(),
            "all_to_all: {} elements do not fit in [{}] -> [{}]", send_counts[0], in.numel(),
            out.numel());
  if (send_counts[0] == 0) return;
  Tensor dst = out.slice_flat(0, {recv_counts[0]});
  backend_.copy(dst, in.slice_flat(0, {send_counts[0]}));
}

void SingleRankCommunicator::broadcast(Tensor&, int root) {
  MOE_CHECK(root == 0, "broadcast: root {} is not a rank of a 1-rank communicator", root);
}

void SingleRankCommunicator::broadcast_host(std::string&, int root) {
  MOE_CHECK(root == 0, "broadcast_host: root {} is not a rank of a 1-rank communicator", root);
}

std::unique_ptr<Communicator> SingleRankCommunicator::split(int, int) {
  return std::make_unique<SingleRankCommunicator>(backend_);
}

}  // namespace moe
