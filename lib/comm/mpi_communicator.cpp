// MpiCommunicator: the Communicator over MPI for CPU tensors, and the process setup of
// process.h when the build has MPI. Every MPI call's error is returned (MPI_ERRORS_RETURN, not
// MPI's default abort without a message) and thrown as a moe::Error naming the operation; main
// then ends the job with abort_processes, so a failing rank takes the others down with it.
// The C API only: MPI's deprecated C++ bindings do not compile warning-free.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <cstdlib>

#include "backend/backend.h"
#include "comm/mpi_communicator.h"
#include "comm/process.h"
#include "core/error.h"

namespace moe {
namespace {

void check_mpi(int rc, const char* op) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  MOE_FAIL("MPI {} failed: {} (a peer rank may have died)", op, std::string(text, len));
}

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kF64: return MPI_DOUBLE;
    case DType::kI32: return MPI_INT32_T;
    case DType::kBF16: return MPI_UINT16_T;
  }
  return MPI_BYTE;
}

int count_of(int64_t n, const char* op) {
  MOE_CHECK(n >= 0 && n <= INT_MAX, "MPI {}: {} elements do not fit an MPI count", op, n);
  return static_cast<int>(n);
}

class MpiRequest final : public CommRequest {
 public:
  explicit MpiRequest(MPI_Request r) : req_(r) {}
  ~MpiRequest() override {
    if (req_ != MPI_REQUEST_NULL) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }
  void wait() override { check_mpi(MPI_Wait(&req_, MPI_STATUS_IGNORE), "wait"); }
  bool test() override {
    int done = 0;
    check_mpi(MPI_Test(&req_, &done, MPI_STATUS_IGNORE), "test");
    return done != 0;
  }

 private:
  MPI_Request req_;
};

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of comm (freed on destruction unless it is MPI_COMM_WORLD).
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void all_reduce_sum(Tensor& t) override {
    check("all_reduce_sum", t);
    check_reduce_dtype("all_reduce_sum", t);
    // In chunks, so no count passes INT_MAX.
    const int64_t chunk = int64_t{1} << 30;
    for (int64_t off = 0; off < t.numel(); off += chunk) {
      const int64_t n = std::min(chunk, t.numel() - off);
      Tensor part = t.slice_flat(off, {n});
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, part.data(), static_cast<int>(n),
                              mpi_type(t.dtype()), MPI_SUM, comm_), "Allreduce");
    }
  }
  std::unique_ptr<CommRequest> all_reduce_sum_async(Tensor& t) override {
    check("all_reduce_sum_async", t);
    check_reduce_dtype("all_reduce_sum_async", t);
    MPI_Request req;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, t.data(), count_of(t.numel(), "Iallreduce"),
                             mpi_type(t.dtype()), MPI_SUM, comm_, &req), "Iallreduce");
    return std::make_unique<MpiRequest>(req);
  }
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override {
    check("reduce_scatter_sum", out);
    check("reduce_scatter_sum", in);
    check_reduce_dtype("reduce_scatter_sum", in);
    MOE_CHECK(in.dtype() == out.dtype() && in.numel() == out.numel() * size_,
              "reduce_scatter_sum: in has {} elements, expected {} ranks x {}", in.numel(), size_,
              out.numel());
    check_mpi(MPI_Reduce_scatter_block(in.data(), out.data(),
                                       count_of(out.numel(), "Reduce_scatter_block"),
                                       mpi_type(in.dtype()), MPI_SUM, comm_),
              "Reduce_scatter_block");
  }
  void all_gather(Tensor& out, const Tensor& in) override {
    check("all_gather", out);
    check("all_gather", in);
    MOE_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * size_,
              "all_gather: out has {} elements, expected {} ranks x {}", out.numel(), size_,
              in.numel());
    check_mpi(MPI_Allgather(in.data(), count_of(in.numel(), "Allgather"), mpi_type(in.dtype()),
                            out.data(), count_of(in.numel(), "Allgather"), mpi_type(in.dtype()),
                            comm_), "Allgather");
  }
  void all_to_all(Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                  const std::vector<int64_t>& send_counts) override {
    check("all_to_all", out);
    check("all_to_all", in);
    MOE_CHECK(in.dtype() == out.dtype(), "all_to_all: in is {}, out is {}",
              dtype_name(in.dtype()), dtype_name(out.dtype()));
    MOE_CHECK(static_cast<int>(recv_counts.size()) == size_ &&
              static_cast<int>(send_counts.size()) == size_,
              "all_to_all: expected {} counts per direction, found {} and {}", size_,
              send_counts.size(), recv_counts.size());
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      sc[r] = count_of(send_counts[r], "Alltoallv");
      rc[r] = count_of(recv_counts[r], "Alltoallv");
      sd[r] = count_of(so, "Alltoallv");
      rd[r] = count_of(ro, "Alltoallv");
      so += send_counts[r];
      ro += recv_counts[r];
    }
    MOE_CHECK(so <= in.numel() && ro <= out.numel(), "all_to_all: sends {} of [{}] and receives "
              "{} into [{}]", so, in.numel(), ro, out.numel());
    const MPI_Datatype t = mpi_type(in.dtype());
    check_mpi(MPI_Alltoallv(in.data(), sc.data(), sd.data(), t, out.data(), rc.data(), rd.data(),
                            t, comm_), "Alltoallv");
  }
  void broadcast(Tensor& t, int root) override {
    check("broadcast", t);
    check_mpi(MPI_Bcast(t.data(), count_of(t.numel(), "Bcast"), mpi_type(t.dtype()), root,
                        comm_), "Bcast");
  }
  void barrier() override { check_mpi(MPI_Barrier(comm_), "Barrier"); }

  void all_reduce_sum_host(std::vector<double>& v) override {
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, v.data(), count_of(static_cast<int64_t>(v.size()),
                            "Allreduce"), MPI_DOUBLE, MPI_SUM, comm_), "Allreduce");
  }
  void all_reduce_sum_host(std::vector<int64_t>& v) override {
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, v.data(), count_of(static_cast<int64_t>(v.size()),
                            "Allreduce"), MPI_INT64_T, MPI_SUM, comm_), "Allreduce");
  }
  std::vector<uint64_t> all_gather_host(uint64_t value) override {
    std::vector<uint64_t> out(static_cast<size_t>(size_));
    check_mpi(MPI_Allgather(&value, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, comm_),
              "Allgather");
    return out;
  }
  void broadcast_host(std::string& bytes, int root) override {
    int64_t n = static_cast<int64_t>(bytes.size());
    check_mpi(MPI_Bcast(&n, 1, MPI_INT64_T, root, comm_), "Bcast");
    bytes.resize(static_cast<size_t>(n));
    if (n > 0) {
      check_mpi(MPI_Bcast(bytes.data(), count_of(n, "Bcast"), MPI_CHAR, root, comm_), "Bcast");
    }
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm sub;
    check_mpi(MPI_Comm_split(comm_, color, key, &sub), "Comm_split");
    return std::make_unique<MpiCommunicator>(sub);
  }

 private:
  static void check(const char* op, const Tensor& t) { check_comm_tensor(op, t, Device::kCpu); }
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

ProcessInfo g_info;

}  // namespace

bool built_with_mpi() { return true; }

ProcessInfo init_processes(int* argc, char*** argv) {
  if (!launched_by_mpi()) return g_info = ProcessInfo{};
  int provided = 0;
  // FUNNELED: OpenMP threads compute, only the main thread calls MPI.
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    MOE_FAIL("MPI_Init_thread failed (launched by an MPI launcher, but MPI could not start)");
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  ProcessInfo info;
  info.mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &info.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &info.size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &info.local_rank);
  MPI_Comm_size(node, &info.local_size);
  MPI_Comm_free(&node);
  return g_info = info;
}

const ProcessInfo& process_info() { return g_info; }

void finalize_processes() {
  if (g_info.mpi) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
}

void abort_processes(int code) {
  if (g_info.mpi && g_info.size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  finalize_processes();
  std::exit(code);
}

std::unique_ptr<Communicator> make_mpi_world_communicator() {
  MOE_CHECK(g_info.mpi, "an MPI communicator needs MPI, and this process was not started by an "
            "MPI launcher");
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
}

}  // namespace moe
