// The NCCL communicator's entry point, declared in plain C++ so lib/comm/process.cpp can call it
// without including a CUDA or NCCL header.
#pragma once
#include <memory>

#include "backend/backend.h"
#include "comm/communicator.h"

namespace moe {
// A Communicator for the CUDA tensors of `cuda_backend` (a CudaBackend) over NCCL: rank and size
// are those of `host`, which broadcasts rank 0's NCCL unique id and carries the host operations.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host,
                                                     Backend& cuda_backend);
}  // namespace moe
