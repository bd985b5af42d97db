// The parts of process.h that do not depend on MPI being built: launcher detection and the
// choice of communicator for a backend.
#include <cstdlib>

#include "backend/backend.h"
#include "comm/mpi_communicator.h"
#include "comm/process.h"
#include "core/error.h"
#ifdef MOE_WITH_CUDA
#include "nccl_entry.h"  // kernels/: plain C++ declarations, no CUDA header
#endif

namespace moe {

bool launched_by_mpi() {
  // Open MPI's mpirun, PMIx (Open MPI 5, srun --mpi=pmix) and PMI-1/2 (MPICH, srun --mpi=pmi2).
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

std::unique_ptr<Communicator> make_host_communicator(Backend& cpu_backend) {
  if (process_info().size <= 1) return std::make_unique<SingleRankCommunicator>(cpu_backend);
  return make_mpi_world_communicator();
}

std::unique_ptr<Communicator> make_world_communicator(Backend& backend) {
  if (process_info().size <= 1) return std::make_unique<SingleRankCommunicator>(backend);
  return make_device_communicator(backend);
}

std::unique_ptr<Communicator> make_device_communicator(Backend& backend) {
  if (backend.device() == Device::kCpu) return make_mpi_world_communicator();
#ifdef MOE_WITH_CUDA
  // NCCL for the GPU tensors, bootstrapped (unique id broadcast) and for host values over MPI,
  // or over nothing with one rank.
  // (A 1-rank host communicator never touches its backend's memory.)
  std::unique_ptr<Communicator> host;
  if (process_info().size <= 1) {
    host = std::make_unique<SingleRankCommunicator>(backend);
  } else {
    host = make_mpi_world_communicator();
  }
  return make_nccl_communicator(std::move(host), backend);
#else
  MOE_FAIL("backend {}: no communicator for this device in this build", backend.name());
#endif
}

}  // namespace moe
