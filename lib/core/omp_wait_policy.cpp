// prefer_passive_omp_wait (see omp_wait_policy.h): setenv + execv of /proc/self/exe.
#include "core/omp_wait_policy.h"

#include <unistd.h>

#include <cstdlib>

namespace moe {

void prefer_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) {
    return;  // the user's choice (or the re-executed image, which has OMP_WAIT_POLICY set)
  }
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when exec failed (no /proc, say): keep running, with the policy libgomp has
  // already read; the variable stays set for child processes, which is harmless.
}

}  // namespace moe
