// The processes of a run: rank, world size and local rank (the rank among the processes of one
// node, which picks the GPU of a CUDA rank), taken from MPI when an MPI launcher (mpirun, srun)
// started this process, and one rank otherwise: the same binary runs with or without a launcher.
#pragma once
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace moe {

class Backend;

struct ProcessInfo {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;
  bool mpi = false;  // MPI was initialised (finalize_processes / abort_processes use it)
};

// True when this build has MPI (CMake found it).
bool built_with_mpi();
// True when an MPI launcher started this process (its environment variables are set).
bool launched_by_mpi();
// Initialises MPI when launched by an MPI launcher (a usage error when the build has no MPI and
// the launcher started more than one process); otherwise one rank. Call once, first in main.
ProcessInfo init_processes(int* argc, char*** argv);
const ProcessInfo& process_info();
// MPI_Finalize when MPI was initialised.
void finalize_processes();
// Ends every rank of the job with `code` (MPI_Abort); a plain exit with one rank.
[[noreturn]] void abort_processes(int code);

// The communicator over all ranks for tensors of `backend`: SingleRankCommunicator for one rank
// (no MPI, no NCCL set up), otherwise make_device_communicator.
std::unique_ptr<Communicator> make_world_communicator(Backend& backend);
// MPI for CPU tensors, NCCL (bootstrapped over MPI, or alone for one rank) for CUDA tensors,
// even with one rank (the 1-rank NCCL test uses it).
std::unique_ptr<Communicator> make_device_communicator(Backend& backend);
// An MPI communicator over all ranks for host (CPU) tensors; single-rank without MPI.
std::unique_ptr<Communicator> make_host_communicator(Backend& cpu_backend);

}  // namespace moe
