// The MPI side of lib/comm (mpi_communicator.cpp, compiled when CMake finds MPI); without MPI,
// process_nompi.cpp provides process.h for one rank and this factory fails.
#pragma once
#include <memory>

#include "comm/communicator.h"

namespace moe {
// MPI_COMM_WORLD as a Communicator for CPU tensors (init_processes must have started MPI).
std::unique_ptr<Communicator> make_mpi_world_communicator();
}  // namespace moe
