// The CUDA backend's entry points, declared in plain C++ so lib/backend/registry.cpp can call
// them without including a CUDA header.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace moe {
int cuda_device_count();  // 0 when the driver or a device is missing
std::unique_ptr<Backend> make_cuda_backend(int device);
}  // namespace moe
