// make_backend: the only file in lib/ that knows whether the CUDA backend was built.
#include <cstdlib>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#ifdef MOE_WITH_CUDA
#include "cuda_entry.h"  // kernels/: plain C++ declarations, no CUDA header
#endif

namespace moe {

std::vector<std::string> available_backends() {
  std::vector<std::string> out = {"cpu"};
#ifdef MOE_WITH_CUDA
  if (cuda_device_count() > 0) out.push_back("cuda");
#endif
  return out;
}

std::unique_ptr<Backend> make_backend(const std::string& spec, int threads) {
  if (spec == "cpu") return std::make_unique<CpuBackend>(threads);
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
#ifdef MOE_WITH_CUDA
    int device = spec == "cuda" ? 0 : std::atoi(spec.c_str() + 5);
    int count = cuda_device_count();
    MOE_USAGE_CHECK(count > 0, "train.device '{}': no CUDA device is visible on this machine",
                    spec);
    MOE_USAGE_CHECK(device >= 0 && device < count, "train.device '{}': expected a device index "
                    "in [0, {}), found {}", spec, count, device);
    return make_cuda_backend(device);
#else
    MOE_USAGE_FAIL("train.device '{}': this build has no CUDA backend (nvcc was not found when "
                   "it was configured); rebuild on a machine with the CUDA toolkit", spec);
#endif
  }
  MOE_USAGE_FAIL("unknown device '{}': expected 'cpu', 'cuda' or 'cuda:N'", spec);
}

}  // namespace moe
